from siege_sync.proto import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HeadRecord(_message.Message):
    __slots__ = ("stamp", "value", "unknown")
    STAMP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    stamp: _events_pb2.StampRef
    value: bytes
    unknown: bool
    def __init__(self, stamp: _Optional[_Union[_events_pb2.StampRef, _Mapping]] = ..., value: _Optional[bytes] = ..., unknown: bool = ...) -> None: ...

class ColumnHeads(_message.Message):
    __slots__ = ("column", "heads")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    column: str
    heads: _containers.RepeatedCompositeFieldContainer[HeadRecord]
    def __init__(self, column: _Optional[str] = ..., heads: _Optional[_Iterable[_Union[HeadRecord, _Mapping]]] = ...) -> None: ...

class LifeRecord(_message.Message):
    __slots__ = ("generation", "deletes", "columns", "known_by_delete", "follows", "held_by", "evicted_by", "whole_row", "delete_refs", "whole_row_of", "latest_row")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DELETES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    KNOWN_BY_DELETE_FIELD_NUMBER: _ClassVar[int]
    FOLLOWS_FIELD_NUMBER: _ClassVar[int]
    HELD_BY_FIELD_NUMBER: _ClassVar[int]
    EVICTED_BY_FIELD_NUMBER: _ClassVar[int]
    WHOLE_ROW_FIELD_NUMBER: _ClassVar[int]
    DELETE_REFS_FIELD_NUMBER: _ClassVar[int]
    WHOLE_ROW_OF_FIELD_NUMBER: _ClassVar[int]
    LATEST_ROW_FIELD_NUMBER: _ClassVar[int]
    generation: _events_pb2.StampRef
    deletes: _containers.RepeatedCompositeFieldContainer[_events_pb2.StampRef]
    columns: _containers.RepeatedCompositeFieldContainer[ColumnHeads]
    known_by_delete: _containers.RepeatedCompositeFieldContainer[_events_pb2.EventRef]
    follows: _events_pb2.StampRef
    held_by: _events_pb2.EventRef
    evicted_by: _events_pb2.EventRef
    whole_row: str
    delete_refs: _containers.RepeatedCompositeFieldContainer[DeleteRefs]
    whole_row_of: _events_pb2.EventRef
    latest_row: WholeRowRecord
    def __init__(self, generation: _Optional[_Union[_events_pb2.StampRef, _Mapping]] = ..., deletes: _Optional[_Iterable[_Union[_events_pb2.StampRef, _Mapping]]] = ..., columns: _Optional[_Iterable[_Union[ColumnHeads, _Mapping]]] = ..., known_by_delete: _Optional[_Iterable[_Union[_events_pb2.EventRef, _Mapping]]] = ..., follows: _Optional[_Union[_events_pb2.StampRef, _Mapping]] = ..., held_by: _Optional[_Union[_events_pb2.EventRef, _Mapping]] = ..., evicted_by: _Optional[_Union[_events_pb2.EventRef, _Mapping]] = ..., whole_row: _Optional[str] = ..., delete_refs: _Optional[_Iterable[_Union[DeleteRefs, _Mapping]]] = ..., whole_row_of: _Optional[_Union[_events_pb2.EventRef, _Mapping]] = ..., latest_row: _Optional[_Union[WholeRowRecord, _Mapping]] = ...) -> None: ...

class WholeRowRecord(_message.Message):
    __slots__ = ("stamp", "columns")
    STAMP_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    stamp: _events_pb2.StampRef
    columns: _containers.RepeatedCompositeFieldContainer[WholeRowColumn]
    def __init__(self, stamp: _Optional[_Union[_events_pb2.StampRef, _Mapping]] = ..., columns: _Optional[_Iterable[_Union[WholeRowColumn, _Mapping]]] = ...) -> None: ...

class WholeRowColumn(_message.Message):
    __slots__ = ("column", "value", "writer")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    column: str
    value: bytes
    writer: _events_pb2.EventRef
    def __init__(self, column: _Optional[str] = ..., value: _Optional[bytes] = ..., writer: _Optional[_Union[_events_pb2.EventRef, _Mapping]] = ...) -> None: ...

class DeleteRefs(_message.Message):
    __slots__ = ("delete", "known")
    DELETE_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    delete: _events_pb2.StampRef
    known: _containers.RepeatedCompositeFieldContainer[_events_pb2.EventRef]
    def __init__(self, delete: _Optional[_Union[_events_pb2.StampRef, _Mapping]] = ..., known: _Optional[_Iterable[_Union[_events_pb2.EventRef, _Mapping]]] = ...) -> None: ...

class RowRegisters(_message.Message):
    __slots__ = ("current", "past", "refs")
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    PAST_FIELD_NUMBER: _ClassVar[int]
    REFS_FIELD_NUMBER: _ClassVar[int]
    current: LifeRecord
    past: _containers.RepeatedCompositeFieldContainer[LifeRecord]
    refs: _containers.RepeatedCompositeFieldContainer[_events_pb2.EventRef]
    def __init__(self, current: _Optional[_Union[LifeRecord, _Mapping]] = ..., past: _Optional[_Iterable[_Union[LifeRecord, _Mapping]]] = ..., refs: _Optional[_Iterable[_Union[_events_pb2.EventRef, _Mapping]]] = ...) -> None: ...
