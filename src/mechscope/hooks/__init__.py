"""Hook points: named identity modules through which every read and edit of an activation goes."""

from mechscope.hooks.module import HookedModule, HookFn, live_hook_leaks
from mechscope.hooks.names import act_name
from mechscope.hooks.point import HookPoint

__all__ = ["HookPoint", "HookedModule", "HookFn", "act_name", "live_hook_leaks"]
