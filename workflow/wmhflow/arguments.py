"""argparse value types shared by the verbs, so that each refuses a bad value in one line the same way."""

from __future__ import annotations

import argparse


def int_at_least(minimum: int):
    """An argparse ``type`` accepting integers >= ``minimum`` ("must be at least 1, got 0")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse
