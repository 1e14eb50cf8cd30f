"""Element sizes of the dtype spellings that trace formats use, in one place.

Each trace format names a tensor's element type its own way: Flight Recorder dumps and the
NCCL profiler args use c10 ScalarType names ("Float", "BFloat16"), the profiler's
`record_shapes` "Input type" uses C++ type names ("float", "c10::BFloat16", "long int"), and
NCCL's debug log prints the `ncclDataType_t` enum value. Bytes of a message are always
elements x bytes per element, so every reader converts through the tables here.
"""

from __future__ import annotations

__all__ = [
    "SCALAR_TYPE_BYTES",
    "CPP_TYPE_BYTES",
    "NCCL_DATATYPE_BYTES",
    "scalar_type_bytes",
    "cpp_type_bytes",
    "nccl_datatype_bytes",
]

SCALAR_TYPE_BYTES: dict[str, int] = {
    "Bool": 1, "Byte": 1, "Char": 1, "Short": 2, "Int": 4, "Long": 8,
    "UInt16": 2, "UInt32": 4, "UInt64": 8,
    "Half": 2, "BFloat16": 2, "Float": 4, "Double": 8,
    "ComplexHalf": 4, "ComplexFloat": 8, "ComplexDouble": 16,
    "Float8_e4m3fn": 1, "Float8_e5m2": 1, "Float8_e4m3fnuz": 1, "Float8_e5m2fnuz": 1,
    "Float8_e8m0fnu": 1,
}
"""c10 ScalarType names (Flight Recorder `input_dtypes`, profiler arg "dtype") -> bytes."""

CPP_TYPE_BYTES: dict[str, int] = {
    "bool": 1, "unsigned char": 1, "signed char": 1, "short int": 2, "int": 4, "long int": 8,
    "short unsigned int": 2, "unsigned int": 4, "long unsigned int": 8,
    "c10::Half": 2, "c10::BFloat16": 2, "float": 4, "double": 8,
    "c10::complex<c10::Half>": 4, "c10::complex<float>": 8, "c10::complex<double>": 16,
    "c10::Float8_e4m3fn": 1, "c10::Float8_e5m2": 1, "c10::Float8_e4m3fnuz": 1,
    "c10::Float8_e5m2fnuz": 1, "c10::Float8_e8m0fnu": 1,
}
"""Profiler `record_shapes` "Input type" strings (C++ type names) -> bytes; the spellings
were read from torch 2.13's profiler for every dtype."""

NCCL_DATATYPE_BYTES: dict[int, int] = {
    0: 1, 1: 1,    # ncclInt8, ncclUint8
    2: 4, 3: 4,    # ncclInt32, ncclUint32
    4: 8, 5: 8,    # ncclInt64, ncclUint64
    6: 2, 7: 4, 8: 8,  # ncclFloat16, ncclFloat32, ncclFloat64
    9: 2,          # ncclBfloat16
    10: 1, 11: 1,  # ncclFloat8e4m3, ncclFloat8e5m2 (NCCL 2.24+)
}
"""`ncclDataType_t` values as printed in NCCL's COLL log lines -> bytes."""


def scalar_type_bytes(name: str) -> int | None:
    """Bytes per element of a c10 ScalarType name, or None when the name is unknown."""
    return SCALAR_TYPE_BYTES.get(name)


def cpp_type_bytes(name: str) -> int | None:
    """Bytes per element of a profiler "Input type" string, or None when unknown."""
    return CPP_TYPE_BYTES.get(name)


def nccl_datatype_bytes(value: int) -> int | None:
    """Bytes per element of an `ncclDataType_t` value, or None when unknown."""
    return NCCL_DATATYPE_BYTES.get(value)
