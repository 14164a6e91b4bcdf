from siege_sync.proto import events_pb2 as _events_pb2
from siege_sync.proto import values_pb2 as _values_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OriginVector(_message.Message):
    __slots__ = ("site", "incarnation", "seq", "head")
    SITE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    site: str
    incarnation: int
    seq: int
    head: bytes
    def __init__(self, site: _Optional[str] = ..., incarnation: _Optional[int] = ..., seq: _Optional[int] = ..., head: _Optional[bytes] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("origins",)
    ORIGINS_FIELD_NUMBER: _ClassVar[int]
    origins: _containers.RepeatedCompositeFieldContainer[OriginVector]
    def __init__(self, origins: _Optional[_Iterable[_Union[OriginVector, _Mapping]]] = ...) -> None: ...

class Policies(_message.Message):
    __slots__ = ("replicated", "elsewhere")
    class ReplicatedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ElsewhereEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REPLICATED_FIELD_NUMBER: _ClassVar[int]
    ELSEWHERE_FIELD_NUMBER: _ClassVar[int]
    replicated: _containers.ScalarMap[str, str]
    elsewhere: _containers.ScalarMap[str, str]
    def __init__(self, replicated: _Optional[_Mapping[str, str]] = ..., elsewhere: _Optional[_Mapping[str, str]] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ("incarnation", "node_version", "schema_fingerprint", "epoch", "applied", "t1_us", "round", "epochs", "policies")
    class EpochsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    NODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    T1_US_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    incarnation: int
    node_version: str
    schema_fingerprint: str
    epoch: str
    applied: Vector
    t1_us: int
    round: int
    epochs: _containers.ScalarMap[str, str]
    policies: Policies
    def __init__(self, incarnation: _Optional[int] = ..., node_version: _Optional[str] = ..., schema_fingerprint: _Optional[str] = ..., epoch: _Optional[str] = ..., applied: _Optional[_Union[Vector, _Mapping]] = ..., t1_us: _Optional[int] = ..., round: _Optional[int] = ..., epochs: _Optional[_Mapping[str, str]] = ..., policies: _Optional[_Union[Policies, _Mapping]] = ...) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("site", "incarnation", "node_version", "schema_fingerprint", "epoch", "applied", "t1_us", "t2_us", "t3_us", "schema_changes", "kept_values", "epochs", "key_warnings", "lost_guards", "policies", "refused", "yours", "yours_purged", "certificates_held", "takes_any_origin")
    class EpochsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SITE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    NODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    T1_US_FIELD_NUMBER: _ClassVar[int]
    T2_US_FIELD_NUMBER: _ClassVar[int]
    T3_US_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_CHANGES_FIELD_NUMBER: _ClassVar[int]
    KEPT_VALUES_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    KEY_WARNINGS_FIELD_NUMBER: _ClassVar[int]
    LOST_GUARDS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    YOURS_FIELD_NUMBER: _ClassVar[int]
    YOURS_PURGED_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATES_HELD_FIELD_NUMBER: _ClassVar[int]
    TAKES_ANY_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    site: str
    incarnation: int
    node_version: str
    schema_fingerprint: str
    epoch: str
    applied: Vector
    t1_us: int
    t2_us: int
    t3_us: int
    schema_changes: _containers.RepeatedScalarFieldContainer[str]
    kept_values: _containers.RepeatedScalarFieldContainer[str]
    epochs: _containers.ScalarMap[str, str]
    key_warnings: _containers.RepeatedScalarFieldContainer[str]
    lost_guards: _containers.RepeatedScalarFieldContainer[str]
    policies: Policies
    refused: str
    yours: _containers.RepeatedScalarFieldContainer[bytes]
    yours_purged: bool
    certificates_held: _containers.RepeatedScalarFieldContainer[str]
    takes_any_origin: bool
    def __init__(self, site: _Optional[str] = ..., incarnation: _Optional[int] = ..., node_version: _Optional[str] = ..., schema_fingerprint: _Optional[str] = ..., epoch: _Optional[str] = ..., applied: _Optional[_Union[Vector, _Mapping]] = ..., t1_us: _Optional[int] = ..., t2_us: _Optional[int] = ..., t3_us: _Optional[int] = ..., schema_changes: _Optional[_Iterable[str]] = ..., kept_values: _Optional[_Iterable[str]] = ..., epochs: _Optional[_Mapping[str, str]] = ..., key_warnings: _Optional[_Iterable[str]] = ..., lost_guards: _Optional[_Iterable[str]] = ..., policies: _Optional[_Union[Policies, _Mapping]] = ..., refused: _Optional[str] = ..., yours: _Optional[_Iterable[bytes]] = ..., yours_purged: bool = ..., certificates_held: _Optional[_Iterable[str]] = ..., takes_any_origin: bool = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("events", "blobs", "certificates", "purged_yours", "expected")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    PURGED_YOURS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedScalarFieldContainer[bytes]
    blobs: _containers.RepeatedCompositeFieldContainer[_values_pb2.BlobChunk]
    certificates: _containers.RepeatedScalarFieldContainer[bytes]
    purged_yours: bool
    expected: int
    def __init__(self, events: _Optional[_Iterable[bytes]] = ..., blobs: _Optional[_Iterable[_Union[_values_pb2.BlobChunk, _Mapping]]] = ..., certificates: _Optional[_Iterable[bytes]] = ..., purged_yours: bool = ..., expected: _Optional[int] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("have", "max_events_per_batch", "certificates_held", "any_origin")
    HAVE_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENTS_PER_BATCH_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATES_HELD_FIELD_NUMBER: _ClassVar[int]
    ANY_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    have: Vector
    max_events_per_batch: int
    certificates_held: _containers.RepeatedScalarFieldContainer[str]
    any_origin: bool
    def __init__(self, have: _Optional[_Union[Vector, _Mapping]] = ..., max_events_per_batch: _Optional[int] = ..., certificates_held: _Optional[_Iterable[str]] = ..., any_origin: bool = ...) -> None: ...

class PushReply(_message.Message):
    __slots__ = ("applied", "applied_events", "already_applied", "waiting", "refused", "waiting_for", "held", "applied_heartbeats", "applied_tables")
    class AppliedTablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    APPLIED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    ALREADY_APPLIED_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    APPLIED_HEARTBEATS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_TABLES_FIELD_NUMBER: _ClassVar[int]
    applied: Vector
    applied_events: int
    already_applied: int
    waiting: int
    refused: _containers.RepeatedScalarFieldContainer[str]
    waiting_for: _containers.RepeatedScalarFieldContainer[str]
    held: _containers.RepeatedScalarFieldContainer[str]
    applied_heartbeats: int
    applied_tables: _containers.ScalarMap[str, int]
    def __init__(self, applied: _Optional[_Union[Vector, _Mapping]] = ..., applied_events: _Optional[int] = ..., already_applied: _Optional[int] = ..., waiting: _Optional[int] = ..., refused: _Optional[_Iterable[str]] = ..., waiting_for: _Optional[_Iterable[str]] = ..., held: _Optional[_Iterable[str]] = ..., applied_heartbeats: _Optional[int] = ..., applied_tables: _Optional[_Mapping[str, int]] = ...) -> None: ...

class PurgeRequest(_message.Message):
    __slots__ = ("applied_everywhere", "held_then", "published_then")
    APPLIED_EVERYWHERE_FIELD_NUMBER: _ClassVar[int]
    HELD_THEN_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_THEN_FIELD_NUMBER: _ClassVar[int]
    applied_everywhere: Vector
    held_then: Vector
    published_then: Vector
    def __init__(self, applied_everywhere: _Optional[_Union[Vector, _Mapping]] = ..., held_then: _Optional[_Union[Vector, _Mapping]] = ..., published_then: _Optional[_Union[Vector, _Mapping]] = ...) -> None: ...

class PurgeOrderRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PurgeReply(_message.Message):
    __slots__ = ("segments", "lives")
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    LIVES_FIELD_NUMBER: _ClassVar[int]
    segments: int
    lives: int
    def __init__(self, segments: _Optional[int] = ..., lives: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("digests",)
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    digests: bool
    def __init__(self, digests: bool = ...) -> None: ...

class TableDigest(_message.Message):
    __slots__ = ("table", "digest", "rows")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    table: str
    digest: str
    rows: int
    def __init__(self, table: _Optional[str] = ..., digest: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class ParkedTx(_message.Message):
    __slots__ = ("origin", "incarnation", "seq", "reason", "since", "attempts", "past_limit")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PAST_LIMIT_FIELD_NUMBER: _ClassVar[int]
    origin: str
    incarnation: int
    seq: int
    reason: str
    since: str
    attempts: int
    past_limit: bool
    def __init__(self, origin: _Optional[str] = ..., incarnation: _Optional[int] = ..., seq: _Optional[int] = ..., reason: _Optional[str] = ..., since: _Optional[str] = ..., attempts: _Optional[int] = ..., past_limit: bool = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("site", "incarnation", "epoch", "schema_fingerprint", "node_version", "applied", "published", "backlog", "conflicts", "digests", "parked", "schema_changes", "kept_values", "key_warnings", "lost_guards", "security_warnings", "policies")
    SITE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    NODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    PARKED_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_CHANGES_FIELD_NUMBER: _ClassVar[int]
    KEPT_VALUES_FIELD_NUMBER: _ClassVar[int]
    KEY_WARNINGS_FIELD_NUMBER: _ClassVar[int]
    LOST_GUARDS_FIELD_NUMBER: _ClassVar[int]
    SECURITY_WARNINGS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    site: str
    incarnation: int
    epoch: str
    schema_fingerprint: str
    node_version: str
    applied: Vector
    published: int
    backlog: int
    conflicts: int
    digests: _containers.RepeatedCompositeFieldContainer[TableDigest]
    parked: _containers.RepeatedCompositeFieldContainer[ParkedTx]
    schema_changes: _containers.RepeatedScalarFieldContainer[str]
    kept_values: _containers.RepeatedScalarFieldContainer[str]
    key_warnings: _containers.RepeatedScalarFieldContainer[str]
    lost_guards: _containers.RepeatedScalarFieldContainer[str]
    security_warnings: _containers.RepeatedScalarFieldContainer[str]
    policies: Policies
    def __init__(self, site: _Optional[str] = ..., incarnation: _Optional[int] = ..., epoch: _Optional[str] = ..., schema_fingerprint: _Optional[str] = ..., node_version: _Optional[str] = ..., applied: _Optional[_Union[Vector, _Mapping]] = ..., published: _Optional[int] = ..., backlog: _Optional[int] = ..., conflicts: _Optional[int] = ..., digests: _Optional[_Iterable[_Union[TableDigest, _Mapping]]] = ..., parked: _Optional[_Iterable[_Union[ParkedTx, _Mapping]]] = ..., schema_changes: _Optional[_Iterable[str]] = ..., kept_values: _Optional[_Iterable[str]] = ..., key_warnings: _Optional[_Iterable[str]] = ..., lost_guards: _Optional[_Iterable[str]] = ..., security_warnings: _Optional[_Iterable[str]] = ..., policies: _Optional[_Union[Policies, _Mapping]] = ...) -> None: ...

class ExchangeRequest(_message.Message):
    __slots__ = ("peer",)
    PEER_FIELD_NUMBER: _ClassVar[int]
    peer: str
    def __init__(self, peer: _Optional[str] = ...) -> None: ...

class ExchangeReply(_message.Message):
    __slots__ = ("peer", "pulled_events", "pushed_events", "clock_offset_us", "problems", "unreachable", "stopped", "lost_guards", "pulled_tables", "pushed_tables")
    class PulledTablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class PushedTablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PEER_FIELD_NUMBER: _ClassVar[int]
    PULLED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    PUSHED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_US_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    LOST_GUARDS_FIELD_NUMBER: _ClassVar[int]
    PULLED_TABLES_FIELD_NUMBER: _ClassVar[int]
    PUSHED_TABLES_FIELD_NUMBER: _ClassVar[int]
    peer: str
    pulled_events: int
    pushed_events: int
    clock_offset_us: int
    problems: _containers.RepeatedScalarFieldContainer[str]
    unreachable: bool
    stopped: bool
    lost_guards: _containers.RepeatedScalarFieldContainer[str]
    pulled_tables: _containers.ScalarMap[str, int]
    pushed_tables: _containers.ScalarMap[str, int]
    def __init__(self, peer: _Optional[str] = ..., pulled_events: _Optional[int] = ..., pushed_events: _Optional[int] = ..., clock_offset_us: _Optional[int] = ..., problems: _Optional[_Iterable[str]] = ..., unreachable: bool = ..., stopped: bool = ..., lost_guards: _Optional[_Iterable[str]] = ..., pulled_tables: _Optional[_Mapping[str, int]] = ..., pushed_tables: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Key(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[_values_pb2.Value]
    def __init__(self, values: _Optional[_Iterable[_Union[_values_pb2.Value, _Mapping]]] = ...) -> None: ...

class RangesRequest(_message.Message):
    __slots__ = ("table", "lo", "bounds", "open_end", "parts", "hi", "bounds_only")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    LO_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    OPEN_END_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_ONLY_FIELD_NUMBER: _ClassVar[int]
    table: str
    lo: Key
    bounds: _containers.RepeatedCompositeFieldContainer[Key]
    open_end: bool
    parts: int
    hi: Key
    bounds_only: bool
    def __init__(self, table: _Optional[str] = ..., lo: _Optional[_Union[Key, _Mapping]] = ..., bounds: _Optional[_Iterable[_Union[Key, _Mapping]]] = ..., open_end: bool = ..., parts: _Optional[int] = ..., hi: _Optional[_Union[Key, _Mapping]] = ..., bounds_only: bool = ...) -> None: ...

class RangeDigest(_message.Message):
    __slots__ = ("hi", "rows", "digest")
    HI_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    hi: Key
    rows: int
    digest: bytes
    def __init__(self, hi: _Optional[_Union[Key, _Mapping]] = ..., rows: _Optional[int] = ..., digest: _Optional[bytes] = ...) -> None: ...

class RangesReply(_message.Message):
    __slots__ = ("ranges",)
    RANGES_FIELD_NUMBER: _ClassVar[int]
    ranges: _containers.RepeatedCompositeFieldContainer[RangeDigest]
    def __init__(self, ranges: _Optional[_Iterable[_Union[RangeDigest, _Mapping]]] = ...) -> None: ...

class RowsRequest(_message.Message):
    __slots__ = ("table", "lo", "hi", "limit", "hashes_only", "keys")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    HASHES_ONLY_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    table: str
    lo: Key
    hi: Key
    limit: int
    hashes_only: bool
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    def __init__(self, table: _Optional[str] = ..., lo: _Optional[_Union[Key, _Mapping]] = ..., hi: _Optional[_Union[Key, _Mapping]] = ..., limit: _Optional[int] = ..., hashes_only: bool = ..., keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ...) -> None: ...

class RowImage(_message.Message):
    __slots__ = ("key", "hash", "columns")
    KEY_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    key: Key
    hash: bytes
    columns: _containers.RepeatedCompositeFieldContainer[_events_pb2.ColumnValue]
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ..., hash: _Optional[bytes] = ..., columns: _Optional[_Iterable[_Union[_events_pb2.ColumnValue, _Mapping]]] = ...) -> None: ...

class RowsReply(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[RowImage]
    def __init__(self, rows: _Optional[_Iterable[_Union[RowImage, _Mapping]]] = ...) -> None: ...

class RowFix(_message.Message):
    __slots__ = ("key", "remove", "columns", "expect")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    EXPECT_FIELD_NUMBER: _ClassVar[int]
    key: Key
    remove: bool
    columns: _containers.RepeatedCompositeFieldContainer[_events_pb2.ColumnValue]
    expect: bytes
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ..., remove: bool = ..., columns: _Optional[_Iterable[_Union[_events_pb2.ColumnValue, _Mapping]]] = ..., expect: _Optional[bytes] = ...) -> None: ...

class RepairRequest(_message.Message):
    __slots__ = ("table", "prefer", "fixes")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    PREFER_FIELD_NUMBER: _ClassVar[int]
    FIXES_FIELD_NUMBER: _ClassVar[int]
    table: str
    prefer: str
    fixes: _containers.RepeatedCompositeFieldContainer[RowFix]
    def __init__(self, table: _Optional[str] = ..., prefer: _Optional[str] = ..., fixes: _Optional[_Iterable[_Union[RowFix, _Mapping]]] = ...) -> None: ...

class RepairReply(_message.Message):
    __slots__ = ("written", "recorded", "changed")
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    written: int
    recorded: int
    changed: int
    def __init__(self, written: _Optional[int] = ..., recorded: _Optional[int] = ..., changed: _Optional[int] = ...) -> None: ...

class AnnounceRequest(_message.Message):
    __slots__ = ("port", "dials_out_only")
    PORT_FIELD_NUMBER: _ClassVar[int]
    DIALS_OUT_ONLY_FIELD_NUMBER: _ClassVar[int]
    port: int
    dials_out_only: bool
    def __init__(self, port: _Optional[int] = ..., dials_out_only: bool = ...) -> None: ...

class AnnounceReply(_message.Message):
    __slots__ = ("seen",)
    SEEN_FIELD_NUMBER: _ClassVar[int]
    seen: str
    def __init__(self, seen: _Optional[str] = ...) -> None: ...

class NewsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NewsReply(_message.Message):
    __slots__ = ("taken",)
    TAKEN_FIELD_NUMBER: _ClassVar[int]
    taken: bool
    def __init__(self, taken: bool = ...) -> None: ...

class ListenRequest(_message.Message):
    __slots__ = ("seconds", "bulletin", "after")
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    BULLETIN_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    seconds: int
    bulletin: str
    after: int
    def __init__(self, seconds: _Optional[int] = ..., bulletin: _Optional[str] = ..., after: _Optional[int] = ...) -> None: ...

class Tidings(_message.Message):
    __slots__ = ("from_sites", "bulletin", "mark")
    FROM_SITES_FIELD_NUMBER: _ClassVar[int]
    BULLETIN_FIELD_NUMBER: _ClassVar[int]
    MARK_FIELD_NUMBER: _ClassVar[int]
    from_sites: _containers.RepeatedScalarFieldContainer[str]
    bulletin: str
    mark: int
    def __init__(self, from_sites: _Optional[_Iterable[str]] = ..., bulletin: _Optional[str] = ..., mark: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("join_id", "offset", "data", "total", "sha256", "source")
    JOIN_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    join_id: str
    offset: int
    data: bytes
    total: int
    sha256: bytes
    source: str
    def __init__(self, join_id: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total: _Optional[int] = ..., sha256: _Optional[bytes] = ..., source: _Optional[str] = ...) -> None: ...

class RestoreStatusRequest(_message.Message):
    __slots__ = ("join_id",)
    JOIN_ID_FIELD_NUMBER: _ClassVar[int]
    join_id: str
    def __init__(self, join_id: _Optional[str] = ...) -> None: ...

class RestoreStatusReply(_message.Message):
    __slots__ = ("received", "joined", "epoch")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    received: int
    joined: bool
    epoch: str
    def __init__(self, received: _Optional[int] = ..., joined: bool = ..., epoch: _Optional[str] = ...) -> None: ...

class RestoreReply(_message.Message):
    __slots__ = ("received", "joined", "summary", "epoch")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    received: int
    joined: bool
    summary: str
    epoch: str
    def __init__(self, received: _Optional[int] = ..., joined: bool = ..., summary: _Optional[str] = ..., epoch: _Optional[str] = ...) -> None: ...
