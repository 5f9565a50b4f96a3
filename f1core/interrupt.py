"""A stop check that f1core's long loops call between units of work (VAE tiles, text windows, scene objects).

f1core imports nothing from ComfyUI: the nodes layer installs ComfyUI's interrupt check for the duration of a
call with `stop_hook(...)`; elsewhere (training, tests) `check_stop` does nothing."""
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable

_hook: ContextVar[Callable[[], None] | None] = ContextVar("f1_stop_hook", default=None)


def check_stop() -> None:
    """Raise whatever the installed hook raises when the caller asked to stop."""
    hook = _hook.get()
    if hook is not None:
        hook()


@contextmanager
def stop_hook(hook: Callable[[], None]):
    token = _hook.set(hook)
    try:
        yield
    finally:
        _hook.reset(token)
