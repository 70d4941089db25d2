"""Reading an adapter's resolved preset values with a clear error for a missing key."""

from __future__ import annotations

from typing import Any, ClassVar

from mer_bench.adapters import AdapterContext
from mer_bench.errors import ConfigError


class PresetParams:
    """Adapter mixin (listed before ``Adapter``): ``_param(key)`` is the preset's value, or a
    ConfigError that names the adapter and the missing key."""

    name: ClassVar[str]
    ctx: AdapterContext

    def _param(self, key: str) -> Any:
        try:
            return self.ctx.params[key]
        except KeyError:
            raise ConfigError(f"{self.name} parameter {key!r} is missing from the preset") from None
