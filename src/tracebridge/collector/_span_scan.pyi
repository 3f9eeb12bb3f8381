from collections.abc import Callable
from typing import Any

def scan(
    body: bytes,
    indexed: tuple[tuple[bytes, str], ...],
    max_value: int,
    resource_id_of: Callable[[bytes], tuple[int, bytes]],
    /,
) -> tuple[
    list[tuple[Any, ...]],
    set[tuple[str, str, str]],
    list[tuple[str, str, str, str]],
    dict[int, bytes],
    int,
    int,
    str,
]: ...
