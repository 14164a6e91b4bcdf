from siege_sync.proto import values_pb2 as _values_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OP_UNSPECIFIED: _ClassVar[Op]
    OP_INSERT: _ClassVar[Op]
    OP_UPDATE: _ClassVar[Op]
    OP_DELETE: _ClassVar[Op]
OP_UNSPECIFIED: Op
OP_INSERT: Op
OP_UPDATE: Op
OP_DELETE: Op

class Origin(_message.Message):
    __slots__ = ("site", "incarnation")
    SITE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    site: str
    incarnation: int
    def __init__(self, site: _Optional[str] = ..., incarnation: _Optional[int] = ...) -> None: ...

class EventRef(_message.Message):
    __slots__ = ("site", "incarnation", "seq")
    SITE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    site: str
    incarnation: int
    seq: int
    def __init__(self, site: _Optional[str] = ..., incarnation: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class StampRef(_message.Message):
    __slots__ = ("wall", "site", "incarnation", "seq")
    WALL_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    wall: int
    site: str
    incarnation: int
    seq: int
    def __init__(self, wall: _Optional[int] = ..., site: _Optional[str] = ..., incarnation: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class ColumnValue(_message.Message):
    __slots__ = ("column", "value", "base")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    column: str
    value: _values_pb2.Value
    base: EventRef
    def __init__(self, column: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.Value, _Mapping]] = ..., base: _Optional[_Union[EventRef, _Mapping]] = ...) -> None: ...

class SourceTx(_message.Message):
    __slots__ = ("tx_id", "first_seq", "count")
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    tx_id: int
    first_seq: int
    count: int
    def __init__(self, tx_id: _Optional[int] = ..., first_seq: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("origin", "seq", "prev_hash", "stamp", "table", "op", "key", "columns", "tx", "captured_local", "captured_utc_us", "user", "client_address", "generation", "delete_bases", "follows", "exist_base", "prior", "known_refs", "parents", "seen", "seal")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    STAMP_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    TX_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_LOCAL_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_UTC_US_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DELETE_BASES_FIELD_NUMBER: _ClassVar[int]
    FOLLOWS_FIELD_NUMBER: _ClassVar[int]
    EXIST_BASE_FIELD_NUMBER: _ClassVar[int]
    PRIOR_FIELD_NUMBER: _ClassVar[int]
    KNOWN_REFS_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    SEEN_FIELD_NUMBER: _ClassVar[int]
    SEAL_FIELD_NUMBER: _ClassVar[int]
    origin: Origin
    seq: int
    prev_hash: bytes
    stamp: int
    table: str
    op: Op
    key: _containers.RepeatedCompositeFieldContainer[_values_pb2.Value]
    columns: _containers.RepeatedCompositeFieldContainer[ColumnValue]
    tx: SourceTx
    captured_local: int
    captured_utc_us: int
    user: str
    client_address: str
    generation: StampRef
    delete_bases: _containers.RepeatedCompositeFieldContainer[ColumnValue]
    follows: StampRef
    exist_base: EventRef
    prior: _containers.RepeatedCompositeFieldContainer[ColumnValue]
    known_refs: KnownRefs
    parents: _containers.RepeatedCompositeFieldContainer[ParentKey]
    seen: SeenRow
    seal: Seal
    def __init__(self, origin: _Optional[_Union[Origin, _Mapping]] = ..., seq: _Optional[int] = ..., prev_hash: _Optional[bytes] = ..., stamp: _Optional[int] = ..., table: _Optional[str] = ..., op: _Optional[_Union[Op, str]] = ..., key: _Optional[_Iterable[_Union[_values_pb2.Value, _Mapping]]] = ..., columns: _Optional[_Iterable[_Union[ColumnValue, _Mapping]]] = ..., tx: _Optional[_Union[SourceTx, _Mapping]] = ..., captured_local: _Optional[int] = ..., captured_utc_us: _Optional[int] = ..., user: _Optional[str] = ..., client_address: _Optional[str] = ..., generation: _Optional[_Union[StampRef, _Mapping]] = ..., delete_bases: _Optional[_Iterable[_Union[ColumnValue, _Mapping]]] = ..., follows: _Optional[_Union[StampRef, _Mapping]] = ..., exist_base: _Optional[_Union[EventRef, _Mapping]] = ..., prior: _Optional[_Iterable[_Union[ColumnValue, _Mapping]]] = ..., known_refs: _Optional[_Union[KnownRefs, _Mapping]] = ..., parents: _Optional[_Iterable[_Union[ParentKey, _Mapping]]] = ..., seen: _Optional[_Union[SeenRow, _Mapping]] = ..., seal: _Optional[_Union[Seal, _Mapping]] = ...) -> None: ...

class Seal(_message.Message):
    __slots__ = ("serial", "signature")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    serial: bytes
    signature: bytes
    def __init__(self, serial: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SeenRow(_message.Message):
    __slots__ = ("columns",)
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[ColumnValue]
    def __init__(self, columns: _Optional[_Iterable[_Union[ColumnValue, _Mapping]]] = ...) -> None: ...

class ParentKey(_message.Message):
    __slots__ = ("foreign_key", "key")
    FOREIGN_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    foreign_key: str
    key: _containers.RepeatedCompositeFieldContainer[_values_pb2.Value]
    def __init__(self, foreign_key: _Optional[str] = ..., key: _Optional[_Iterable[_Union[_values_pb2.Value, _Mapping]]] = ...) -> None: ...

class KnownRefs(_message.Message):
    __slots__ = ("refs",)
    REFS_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.RepeatedCompositeFieldContainer[EventRef]
    def __init__(self, refs: _Optional[_Iterable[_Union[EventRef, _Mapping]]] = ...) -> None: ...
