"""The model's three classes, without torch: what a server or a report needs to read an
answer (``kubetrade.models.hybrid`` re-exports both)."""

from __future__ import annotations

__all__ = ["CLASS_NAMES", "CLASS_POSITIONS"]

#: Class index -> name, in the guide's order ("Buy/Hold/Sell").
CLASS_NAMES: tuple[str, str, str] = ("buy", "hold", "sell")
#: Class index -> trading position used by the financial metrics.
CLASS_POSITIONS: tuple[float, float, float] = (1.0, 0.0, -1.0)
