"""Kubernetes quantities ("500m", "10Gi") and Go durations ("5m", "1h30m").

The CRD checks their format with the same patterns; the operator parses them
to compare sizes (requests against limits) and intervals.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal

# The grammar of k8s.io/apimachinery resource.Quantity, as controller-gen emits it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY = re.compile(QUANTITY_PATTERN)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)")

_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_SUFFIXES = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}

# Go's time.ParseDuration units; "µs" and "us" are both microseconds.
DURATION_PATTERN = r"^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$"
_DURATION = re.compile(DURATION_PATTERN)
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": timedelta(microseconds=0.001),
    "us": timedelta(microseconds=1),
    "µs": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
}


def is_quantity(value: str) -> bool:
    return _QUANTITY.fullmatch(value) is not None


def parse_quantity(value: str | int) -> Decimal:
    """The numeric value of a quantity: parse_quantity("1Gi") == 2**30."""
    text = str(value)
    if not is_quantity(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2Gi, 1.5)")
    number = _NUMBER.match(text)
    assert number is not None  # the full pattern starts with a number
    mantissa, suffix = Decimal(number.group(0)), text[number.end() :]
    if suffix in _BINARY_SUFFIXES:
        return mantissa * Decimal(2 ** _BINARY_SUFFIXES[suffix])
    if suffix in _DECIMAL_SUFFIXES:
        return mantissa.scaleb(_DECIMAL_SUFFIXES[suffix])
    return mantissa.scaleb(int(suffix[1:]))  # exponent form: "1e3"


def parse_duration(value: str) -> timedelta:
    """A Go duration ("90s", "1h30m") as a timedelta."""
    if not _DURATION.fullmatch(value):
        raise ValueError(f"{value!r} is not a duration (e.g. 30s, 5m, 1h30m)")
    return sum(
        (float(amount) * _DURATION_UNITS[unit] for amount, unit in _DURATION_PART.findall(value)),
        timedelta(),
    )


# Sizes where Spark reads them (spark.executor.memory, spark.driver.memory): Spark's own
# notation ("512m", "4g", "1t", "4gb", any case, powers of 1024, "b" for bytes) or a
# Kubernetes binary quantity ("4Gi"). A bare number is refused: Spark reads it as
# mebibytes, Kubernetes as bytes. Fractions ("1.5g") are allowed and rounded up.
SPARK_SIZE_PATTERN = r"^([0-9]+([.][0-9]+)?)([kKmMgGtTpP][bB]?|[bB]|[KMGTP]i)$"
SPARK_SIZE_HINT = "as Spark writes it (512m, 4g, 1t) or a Kubernetes quantity (4Gi)"
_SPARK_SIZE = re.compile(SPARK_SIZE_PATTERN)
_SPARK_SIZE_POWERS = {"b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}
MEBIBYTE = 2**20


def spark_size_bytes(value: str) -> int:
    """The bytes a Spark size means: "4g", "4G", "4gb" and "4Gi" all mean 4 * 2**30."""
    match = _SPARK_SIZE.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r}: must be a size {SPARK_SIZE_HINT}")
    number, unit = Decimal(match.group(1)), match.group(3).lower()
    exact: Decimal = number * 2 ** _SPARK_SIZE_POWERS[unit[0]]
    return math.ceil(exact)


def spark_mebibytes(value: str) -> str:
    """The size as Spark's memory settings read it everywhere: whole mebibytes ("4096m")."""
    return f"{math.ceil(spark_size_bytes(value) / MEBIBYTE)}m"
