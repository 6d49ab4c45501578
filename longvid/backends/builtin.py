"""Registers the backends that ship with longvid, through the same hook plugins use."""

from __future__ import annotations

from collections.abc import Callable


def register_backends(register: Callable[[type], None]) -> None:
    from longvid.backends.anyflow_far import AnyFlowFARBackend
    from longvid.backends.causal_memory_wan import CausalMagBackend, CausalMemFlowBackend
    from longvid.backends.causal_wan import CausalWanBackend
    from longvid.backends.procworld import ProcWorldBackend
    from longvid.backends.skyreels_df import SkyReelsDFBackend
    from longvid.backends.tiny import TinyWanBackend
    from longvid.backends.tiny_causal import TinyCausalBackend
    from longvid.backends.tiny_memory import TinyMagBackend, TinyMemFlowBackend
    from longvid.backends.wan_vace import WanVACEBackend

    register(TinyWanBackend)
    register(ProcWorldBackend)
    register(SkyReelsDFBackend)
    register(WanVACEBackend)
    register(AnyFlowFARBackend)
    register(TinyCausalBackend)
    register(TinyMagBackend)
    register(TinyMemFlowBackend)
    register(CausalWanBackend)
    register(CausalMemFlowBackend)
    register(CausalMagBackend)
