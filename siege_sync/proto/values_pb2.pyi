from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Value(_message.Message):
    __slots__ = ("null", "integer", "scaled", "double_bits", "float_bits", "boolean", "date", "time", "timestamp", "text", "octets", "blob", "array")
    NULL_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    SCALED_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_BITS_FIELD_NUMBER: _ClassVar[int]
    FLOAT_BITS_FIELD_NUMBER: _ClassVar[int]
    BOOLEAN_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OCTETS_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    null: bool
    integer: int
    scaled: Scaled
    double_bits: int
    float_bits: int
    boolean: bool
    date: int
    time: int
    timestamp: int
    text: str
    octets: bytes
    blob: BlobRef
    array: ArrayValue
    def __init__(self, null: bool = ..., integer: _Optional[int] = ..., scaled: _Optional[_Union[Scaled, _Mapping]] = ..., double_bits: _Optional[int] = ..., float_bits: _Optional[int] = ..., boolean: bool = ..., date: _Optional[int] = ..., time: _Optional[int] = ..., timestamp: _Optional[int] = ..., text: _Optional[str] = ..., octets: _Optional[bytes] = ..., blob: _Optional[_Union[BlobRef, _Mapping]] = ..., array: _Optional[_Union[ArrayValue, _Mapping]] = ...) -> None: ...

class Scaled(_message.Message):
    __slots__ = ("unscaled", "scale")
    UNSCALED_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    unscaled: int
    scale: int
    def __init__(self, unscaled: _Optional[int] = ..., scale: _Optional[int] = ...) -> None: ...

class BlobRef(_message.Message):
    __slots__ = ("sha256", "length")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    sha256: bytes
    length: int
    def __init__(self, sha256: _Optional[bytes] = ..., length: _Optional[int] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("sha256", "offset", "data", "total")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    sha256: bytes
    offset: int
    data: bytes
    total: int
    def __init__(self, sha256: _Optional[bytes] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total: _Optional[int] = ...) -> None: ...

class ArrayValue(_message.Message):
    __slots__ = ("shape", "elements")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    elements: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., elements: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...
