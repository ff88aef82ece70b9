"""Concurrency primitives: one implementation for sync and async callers, timeouts, a FIFO
limiter for threads and asyncio tasks, per-runnable limits, and per-device locks.

- :func:`run_steps` / :func:`arun_steps`: code that must run both under ``invoke`` and
  ``ainvoke`` is written once, as a generator that yields each call it needs; only the
  driver differs (a blocking call, or an awaited one).

- Timeouts (:func:`call_with_timeout`, :func:`await_with_timeout`, :data:`DEFAULT_TIMEOUT`):
  an awaited call that times out is cancelled (its task gets ``CancelledError``, and
  ``async with`` blocks, the limiter's included, unwind). Python cannot stop a sync call
  from outside, so a timed sync call runs in a daemon thread of its own, which the caller
  stops waiting for: the process can always exit, and the call's :class:`Cancellation` is
  set. The package's own blocking points look at it and end the call there (a
  :class:`ConcurrencyLimiter` wait, a local model's queue), and give back what the call
  holds (a permit taken with :meth:`ConcurrencyLimiter.permit`, as :func:`limit_concurrency`
  and served models' ``max_concurrency`` take theirs); other code runs on in its thread until
  it returns, its result dropped.

- :func:`limit_concurrency` wraps any expert runnable so that at most ``n`` of its calls run
  at once (threads and asyncio tasks alike; a FIFO :class:`ConcurrencyLimiter`).
- :class:`ExpertLoad` counts each expert's calls in flight: the executor counts, two-step
  routing's least-loaded policy reads.
- Device locks: a local generation engine holds its device's lock around every ``generate``
  call, so engines of *different* models on one device take turns instead of competing for the
  same cores or GPU (on by default, one ``generate`` per device; :func:`set_device_concurrency`
  allows more where that is measured to be faster).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
)
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.utils import Input, Output
from langgraph.errors import GraphBubbleUp

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

# --- one implementation for sync and async callers ------------------------------------------

C = TypeVar("C")

Steps = Generator[C, Any, T]
"""Work that yields the calls it needs (``C``), is sent each call's result or has its
exception thrown in, and returns ``T``."""


def run_steps(steps: Steps[C, T], call: Callable[[C], Any]) -> T:
    """Drive ``steps`` with blocking calls: ``call(c)`` for each call ``c`` it yields."""
    try:
        request = next(steps)
        while True:
            try:
                result = call(request)
            except GraphBubbleUp:  # LangGraph's control flow (an interrupt) is not an error
                raise
            except Exception as exc:
                request = steps.throw(exc)
            else:
                request = steps.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        steps.close()  # its cleanup runs however the driving stopped


async def arun_steps(steps: Steps[C, T], call: Callable[[C], Awaitable[Any]]) -> T:
    """Drive ``steps`` with awaited calls: ``await call(c)`` for each call ``c`` it yields."""
    try:
        request = next(steps)
        while True:
            try:
                result = await call(request)
            except GraphBubbleUp:
                raise
            except Exception as exc:
                request = steps.throw(exc)
            else:
                request = steps.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        steps.close()


# --- timeouts -------------------------------------------------------------------------------

DEFAULT_TIMEOUT = 300.0
"""Seconds a model call may take before it is given up (experts, decomposer, aggregator).

Generous for the embedded models on a loaded CPU (the slowest batched expert call measured
took about a minute), and it still ends a run whose model server hangs. ``None`` waits
forever."""


class Cancellation:
    """Set once the caller of a timed sync call stops waiting for it.

    Code running inside the call finds it with :func:`current_cancellation` and can stop
    early: check :attr:`cancelled`, :meth:`wait` on it, or register a callback.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], object]] = []

    @property
    def cancelled(self) -> bool:
        """Whether the caller has given up."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled (True) or ``timeout`` seconds pass (False)."""
        return self._event.wait(timeout)

    def cancel(self) -> None:
        """Set the cancellation and run the callbacks (once)."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def add_callback(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` when cancelled (now, if already)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def remove_callback(self, callback: Callable[[], object]) -> None:
        """Forget ``callback`` (nothing happens if it was not registered or already ran)."""
        with self._lock, contextlib.suppress(ValueError):
            self._callbacks.remove(callback)


_cancellation: contextvars.ContextVar[Cancellation | None] = contextvars.ContextVar(
    "complm_cancellation", default=None
)


def current_cancellation() -> Cancellation | None:
    """The :class:`Cancellation` of the timed sync call running now, if any."""
    return _cancellation.get()


def call_with_timeout(fn: Callable[[], T], timeout: float | None, what: str) -> T:
    """``fn()``, given up after ``timeout`` seconds (None: no limit, called in this thread).

    ``fn`` runs in a new daemon thread, in a copy of the caller's context (callbacks,
    LangGraph's config, batch cohorts carry over). When the time is up the caller gets
    ``TimeoutError`` naming ``what`` at once and the call's :class:`Cancellation` is set;
    whatever ``fn`` still does finishes in the background and its result is dropped.
    """
    if timeout is None:
        return fn()
    cancellation = Cancellation()
    future: Future[T] = Future()

    def run() -> None:
        _cancellation.set(cancellation)
        try:
            future.set_result(fn())
        except BaseException as error:
            future.set_exception(error)

    context = contextvars.copy_context()
    # A daemon thread: a call that never returns must not keep the process alive (the
    # threads of a ThreadPoolExecutor are joined at exit).
    worker = threading.Thread(target=context.run, args=(run,), name=f"complm {what}", daemon=True)
    worker.start()
    try:
        return future.result(timeout)
    except FutureTimeoutError:
        raise TimeoutError(f"{what} did not finish within {timeout:g} s") from None
    finally:
        if not future.done():
            cancellation.cancel()


async def await_with_timeout(awaitable: Awaitable[T], timeout: float | None, what: str) -> T:
    """``await awaitable``, cancelled after ``timeout`` seconds (None: no limit).

    Raises:
        TimeoutError: naming ``what`` (the built-in one, on every Python version).
    """
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"{what} did not finish within {timeout:g} s") from None


X = TypeVar("X")


def stream_with_timeout(
    stream: Callable[[], Iterable[X]],
    add: Callable[[T | None, X], T],
    timeout: float | None,
    what: str,
) -> T | None:
    """Read ``stream()`` to its end, folding each item into the result with ``add(result,
    item)`` (``None`` for an empty stream), given up after ``timeout`` seconds in all as
    :func:`call_with_timeout` gives a call up; once given up, no item reaches ``add``."""

    def read() -> T | None:
        cancellation = current_cancellation()
        result = None
        for item in stream():
            if cancellation is not None and cancellation.cancelled:
                break  # given up: what ``add`` does must stop with the caller's wait
            result = add(result, item)
        return result

    return call_with_timeout(read, timeout, what)


async def astream_with_timeout(
    stream: Callable[[], AsyncIterable[X]],
    add: Callable[[T | None, X], T],
    timeout: float | None,
    what: str,
) -> T | None:
    """:func:`stream_with_timeout` for an async stream, cancelled after ``timeout``."""

    async def read() -> T | None:
        result = None
        async for item in stream():
            result = add(result, item)
        return result

    return await await_with_timeout(read(), timeout, what)


def first_done(futures: Iterable[Future[Any]]) -> set[Future[Any]]:
    """Block until at least one of ``futures`` is done; the done ones."""
    return wait(futures, return_when=FIRST_COMPLETED)[0]


async def afirst_done(futures: Iterable[asyncio.Future[Any]]) -> set[asyncio.Future[Any]]:
    """:func:`first_done` for asyncio futures, awaited."""
    return (await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED))[0]


def result_unless_cancelled(future: Future[T]) -> T:
    """``future.result()``, unless the current timed call is cancelled first: then the future
    is cancelled too (work not started yet is dropped) and ``TimeoutError`` is raised."""
    cancellation = current_cancellation()
    if cancellation is None:
        return future.result()
    woken = threading.Event()
    cancellation.add_callback(woken.set)
    future.add_done_callback(lambda _: woken.set())
    try:
        woken.wait()
    finally:
        cancellation.remove_callback(woken.set)
    if not future.done():
        future.cancel()
        raise TimeoutError("cancelled: the caller stopped waiting")
    return future.result()


# --- a FIFO semaphore for threads and asyncio tasks -----------------------------------------


@dataclass(eq=False)
class _Waiter:
    event: threading.Event | None = None
    future: asyncio.Future[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    granted: bool = False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ConcurrencyLimiter:
    """A semaphore shared by threads and asyncio tasks, served in arrival order.

    ``with limiter:`` and ``async with limiter:`` hold one of ``limit`` permits. Waiting
    asyncio tasks do not block their event loop, a cancelled task gives its place (or its
    permit) back, so does a thread waiting inside a timed call that is cancelled, and a
    released permit goes straight to the longest waiter, so no caller starves. ``peak`` is
    the most permits ever held at once (for tests and benchmarks).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._active = 0
        self._waiters: deque[_Waiter] = deque()
        self.peak = 0
        """Most permits held at the same time so far."""
        self.waits = 0
        """How many acquisitions had to wait for a permit."""

    @property
    def active(self) -> int:
        """Permits held now."""
        return self._active

    def _grant_locked(self) -> None:
        self._active += 1
        self.peak = max(self.peak, self._active)

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a permit, waiting up to ``timeout`` seconds (forever when None); False when
        the time is up, or when the timed call this runs in is cancelled meanwhile."""
        with self._lock:
            if self._active < self.limit and not self._waiters:
                self._grant_locked()
                return True
            waiter = _Waiter(event=threading.Event())
            self._waiters.append(waiter)
            self.waits += 1
        assert waiter.event is not None
        cancellation = current_cancellation()
        if cancellation is not None:
            cancellation.add_callback(waiter.event.set)
        try:
            waiter.event.wait(timeout)
        finally:
            if cancellation is not None:
                cancellation.remove_callback(waiter.event.set)
        with self._lock:
            if waiter.granted:  # also when granted between the wake-up and the lock
                return True
            self._waiters.remove(waiter)
            return False

    async def aacquire(self) -> None:
        """Take a permit without blocking the event loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._active < self.limit and not self._waiters:
                self._grant_locked()
                return
            waiter = _Waiter(future=loop.create_future(), loop=loop)
            self._waiters.append(waiter)
            self.waits += 1
        assert waiter.future is not None
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                granted = waiter.granted
                if not granted:
                    self._waiters.remove(waiter)
            if granted:  # the permit arrived as the task was cancelled: pass it on
                self.release()
            raise

    def release(self) -> None:
        """Give a permit back; the longest waiter, if any, gets it."""
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                waiter.granted = True
                self.peak = max(self.peak, self._active)
                if waiter.event is not None:
                    waiter.event.set()
                    return
                assert waiter.loop is not None and waiter.future is not None
                try:
                    waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
                    return
                except RuntimeError:  # its event loop is closed: try the next waiter
                    continue
            if self._active <= 0:
                raise RuntimeError("ConcurrencyLimiter released more often than acquired")
            self._active -= 1

    def _take(self) -> None:
        if not self.acquire():
            raise TimeoutError("stopped waiting for a permit: the call was cancelled")

    def permit(self) -> _Permit:
        """One permit for one call: ``with limiter.permit():`` or ``async with ...``.

        Unlike ``with limiter:``, a sync call given up by its timeout (see
        :func:`call_with_timeout`) gives the permit back at once, as a cancelled task does:
        the limit counts the calls someone still waits for, and a call stuck for good does not
        keep the ones after it out.
        """
        return _Permit(self)

    def __enter__(self) -> ConcurrencyLimiter:
        self._take()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> ConcurrencyLimiter:
        await self.aacquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"ConcurrencyLimiter(limit={self.limit}, active={self._active})"


class _Permit:
    """A single-use permit of a :class:`ConcurrencyLimiter` (see :meth:`~ConcurrencyLimiter.
    permit`)."""

    def __init__(self, limiter: ConcurrencyLimiter) -> None:
        self._limiter = limiter
        self._once = threading.Lock()
        self._cancellation: Cancellation | None = None

    def _give_back(self) -> None:
        if self._once.acquire(blocking=False):
            self._limiter.release()

    def __enter__(self) -> _Permit:
        self._limiter._take()
        self._cancellation = current_cancellation()
        if self._cancellation is not None:
            self._cancellation.add_callback(self._give_back)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cancellation is not None:
            self._cancellation.remove_callback(self._give_back)
        self._give_back()

    async def __aenter__(self) -> _Permit:
        await self._limiter.aacquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._give_back()


# --- per-expert concurrency limit -------------------------------------------------------------


class ConcurrencyLimitedRunnable(Runnable[Input, Output]):
    """Runs ``bound`` with at most ``limiter.limit`` calls in flight; otherwise transparent.

    ``invoke``, ``ainvoke``, ``batch``/``abatch`` (one permit per input) and
    ``stream``/``astream`` (the permit is held until the stream ends) all go through the
    limiter; a call given up by a timeout gives its permit back at once (see the module
    docstring). Config and callbacks pass straight to ``bound``, so traces show the wrapped
    runnable's own runs and no extra level. Other attributes (``engine``, ``model_id``, ...)
    are read from ``bound``.
    """

    def __init__(self, bound: Runnable[Input, Output], limiter: ConcurrencyLimiter) -> None:
        self.bound = bound
        self.limiter = limiter
        self.name = bound.get_name()

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found normally; guard against lookups before
        # __init__ ran (copy, pickle).
        if name.startswith("__") or "bound" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["bound"], name)

    def __repr__(self) -> str:
        return f"limit_concurrency({self.bound!r}, {self.limiter.limit})"

    @property
    def InputType(self) -> Any:
        return self.bound.InputType

    @property
    def OutputType(self) -> Any:
        return self.bound.OutputType

    def get_input_schema(self, config: RunnableConfig | None = None) -> Any:
        return self.bound.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> Any:
        return self.bound.get_output_schema(config)

    @property
    def config_specs(self) -> Any:
        return self.bound.config_specs

    def invoke(self, input: Input, config: RunnableConfig | None = None, **kwargs: Any) -> Output:
        with self.limiter.permit():
            return self.bound.invoke(input, config, **kwargs)

    async def ainvoke(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Output:
        async with self.limiter.permit():
            return await self.bound.ainvoke(input, config, **kwargs)

    def stream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Output]:
        with self.limiter.permit():
            yield from self.bound.stream(input, config, **kwargs)

    async def astream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Output]:
        async with self.limiter.permit():
            async for chunk in self.bound.astream(input, config, **kwargs):
                yield chunk


def limit_concurrency(
    runnable: Runnable[Input, Output], limit: int | ConcurrencyLimiter
) -> ConcurrencyLimitedRunnable[Input, Output]:
    """``runnable`` with at most ``limit`` calls running at once (threads and tasks).

    Pass the same :class:`ConcurrencyLimiter` to several runnables to give them one shared
    limit (e.g. two experts over one server). Use it as an expert's model::

        Expert(name="math", llm=limit_concurrency(ChatOpenAI(...), 2))
    """
    limiter = limit if isinstance(limit, ConcurrencyLimiter) else ConcurrencyLimiter(limit)
    return ConcurrencyLimitedRunnable(runnable, limiter)


# --- device locks -------------------------------------------------------------------------------

_devices_lock = threading.Lock()
_device_limiters: dict[str, ConcurrencyLimiter | None] = {}

DEFAULT_DEVICE_CONCURRENCY = 1
"""``generate`` calls that may run at once on one device, unless set otherwise."""


class ExpertLoad:
    """Calls in flight per expert name, shared by the threads and tasks that make them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}

    @contextlib.contextmanager
    def track(self, expert: str) -> Iterator[None]:
        """Count one call to ``expert`` for as long as the block runs."""
        with self._lock:
            self._in_flight[expert] = self._in_flight.get(expert, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[expert] -= 1

    def __getitem__(self, expert: str) -> int:
        """Calls to ``expert`` in flight now."""
        with self._lock:
            return self._in_flight.get(expert, 0)

    def __repr__(self) -> str:
        with self._lock:
            busy = {k: v for k, v in self._in_flight.items() if v}
        return f"ExpertLoad({busy})"


def device_key(device: str | torch.device) -> str:
    """A device's canonical name: ``"cpu"``, ``"cuda:0"``, ``"mps:0"``, ..."""
    text = str(device)
    kind, _, index = text.partition(":")
    if kind == "cpu":
        return "cpu"
    return f"{kind}:{index or 0}"


def set_device_concurrency(device: str | torch.device, limit: int | None) -> None:
    """How many ``generate`` calls (of different models) may run at once on ``device``.

    Default 1: engines take turns, which is fastest on a CPU (threads over one set of cores
    slow each other down). ``None`` removes the limit, e.g. for small models on a large GPU
    where concurrent kernels were measured to be faster. Calls already running keep the
    limit they started under.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 or None, got {limit}")
    key = device_key(device)
    with _devices_lock:
        _device_limiters[key] = None if limit is None else ConcurrencyLimiter(limit)


def device_limiter(device: str | torch.device) -> ConcurrencyLimiter | None:
    """The limiter of ``device`` (created on first use), or None when it has no limit."""
    key = device_key(device)
    with _devices_lock:
        if key not in _device_limiters:
            _device_limiters[key] = ConcurrencyLimiter(DEFAULT_DEVICE_CONCURRENCY)
        return _device_limiters[key]


def device_lock(
    device: str | torch.device,
) -> contextlib.AbstractContextManager[ConcurrencyLimiter | None]:
    """Hold while running a model on ``device``: ``with device_lock(model.device): ...``."""
    limiter = device_limiter(device)
    return limiter if limiter is not None else contextlib.nullcontext()


__all__ = [
    "DEFAULT_DEVICE_CONCURRENCY",
    "DEFAULT_TIMEOUT",
    "Cancellation",
    "ConcurrencyLimitedRunnable",
    "ConcurrencyLimiter",
    "ExpertLoad",
    "Steps",
    "afirst_done",
    "arun_steps",
    "astream_with_timeout",
    "await_with_timeout",
    "call_with_timeout",
    "current_cancellation",
    "device_key",
    "device_limiter",
    "device_lock",
    "first_done",
    "limit_concurrency",
    "result_unless_cancelled",
    "run_steps",
    "set_device_concurrency",
    "stream_with_timeout",
]
