"""Validated reading of user-supplied settings: ``--params`` files, ``--set`` values, JSON text.

JSON from a file or the command line may come from anywhere (a shared study export, a copied
command). It is parsed with limits (size, nesting depth, digits of an integer), non-finite
numbers (``NaN``, ``Infinity``, ``1e400``) are refused, and the result must fit a small schema:
scalars (bool, int, finite float, str, null) and lists/objects of them, object keys ``str``.
Every refusal is a ``ConfigError`` (one ``error:`` line from the CLI) that quotes at most a few
dozen characters of the offending text.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from mer_bench.errors import ConfigError, MerBenchError

__all__ = [
    "check_finite",
    "loads_limited",
    "parse_set_value",
    "read_json_file",
    "read_params_file",
    "shorten",
]

MAX_FILE_BYTES = 1 << 20
"""Largest ``--params`` file read."""
MAX_DEPTH = 8
"""Nesting of lists/objects in a parameter value."""
MAX_INT_DIGITS = 30
MAX_ITEMS = 10_000
MAX_TEXT = 10_000
_NAME = re.compile(r"[A-Za-z_][\w.:-]{0,199}")


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, non-printables replaced (for messages)."""
    head = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return head + ("…" if len(text) > limit else "")


def _refuse_constant(name: str) -> Any:
    raise ConfigError(f"non-finite number {name} (only finite numbers are accepted)")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ConfigError(f"integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ConfigError(f"number {shorten(text)} is out of range (not finite)")
    return value


def _depth_ok(text: str, limit: int) -> bool:
    """Whether brackets nest at most ``limit`` deep (checked before parsing: no recursion)."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return False
        elif char in "]}":
            depth -= 1
    return True


def loads_limited(text: str, what: str, *, max_depth: int = MAX_DEPTH + 2) -> Any:
    """Parse JSON ``text`` with the limits of the module docstring; ConfigError if it breaks one.

    ``what`` names the input in messages (``--params FILE``).
    """
    if not _depth_ok(text, max_depth):
        raise ConfigError(f"{what}: JSON nested more than {max_depth} levels deep")
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except MerBenchError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise ConfigError(f"{what}: not valid JSON ({shorten(str(exc), 120)})") from None


def check_value(value: Any, what: str, depth: int = 0) -> Any:
    """``value`` if it is a plain parameter value (module docstring), else ConfigError."""
    if depth > MAX_DEPTH:
        raise ConfigError(f"{what}: value nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return check_finite(what, value)
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ConfigError(f"{what}: text of {len(value)} characters (at most {MAX_TEXT})")
        return value
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            raise ConfigError(f"{what}: list of {len(value)} items (at most {MAX_ITEMS})")
        return [check_value(v, what, depth + 1) for v in value]
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            raise ConfigError(f"{what}: object of {len(value)} keys (at most {MAX_ITEMS})")
        return {_text_key(k, what): check_value(v, what, depth + 1) for k, v in value.items()}
    raise ConfigError(f"{what}: unsupported value of type {type(value).__name__}")


def _text_key(key: Any, what: str) -> str:
    if not isinstance(key, str) or len(key) > 200:
        raise ConfigError(f"{what}: object keys must be short strings")
    return key


def _key(key: Any, what: str) -> str:
    if not isinstance(key, str) or not _NAME.fullmatch(key):
        shown = shorten(key) if isinstance(key, str) else type(key).__name__
        raise ConfigError(f"{what}: invalid parameter name {shown!r}")
    return key


def check_finite(name: str, value: Any) -> Any:
    """``value`` unless it is a non-finite float (NaN or ±inf): ConfigError naming ``name``."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"parameter {name!r} must be a finite number, got {value}")
    return value


def parse_set_value(text: str, name: str = "--set") -> Any:
    """The value of a ``--set key=value`` term: JSON if it parses as JSON, else the text."""
    if len(text) > MAX_TEXT:
        raise ConfigError(f"{name}: value of {len(text)} characters (at most {MAX_TEXT})")
    try:
        value = loads_limited(text, name)
    except ConfigError:
        stripped = text.strip()
        # Text that looks like JSON (a number, list, object) but breaks a rule is refused;
        # anything else is a plain string value.
        if (
            stripped[:1] in ("[", "{", "-")
            or stripped[:1].isdigit()
            or stripped
            in (
                "NaN",
                "Infinity",
            )
        ):
            raise
        return text
    return check_value(value, name)


def read_json_file(path: str | Path, what: str, *, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Read and parse a JSON file with limits; ConfigError for a missing, huge or bad file."""
    from mer_bench.data.streams import open_regular
    from mer_bench.errors import DataError

    try:
        with open_regular(Path(path)) as fh:
            raw = fh.read(max_bytes + 1)
    except DataError as exc:
        raise ConfigError(f"cannot read {what}: {exc}") from None
    if len(raw) > max_bytes:
        raise ConfigError(f"{what} is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} is not UTF-8 text") from None
    return loads_limited(text, what)


def read_params_file(path: str | Path) -> dict[str, Any]:
    """A ``--params`` file: a JSON object of parameters, or a tune export with ``params``.

    Parameter names must be identifiers and values plain (module docstring).
    """
    what = f"--params {path}"
    data = read_json_file(path, what)
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must hold a JSON object")
    data = check_value(data, what)
    if "model" in data and not isinstance(data["model"], str):
        raise ConfigError(f"{what}: 'model' must be a string")
    if "params" in data and not isinstance(data["params"], dict):
        raise ConfigError(f"{what}: 'params' must be a JSON object")
    for key in data.get("params", data):
        _key(key, what)
    return data
