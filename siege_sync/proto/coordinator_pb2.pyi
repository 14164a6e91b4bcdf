from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoundRequest(_message.Message):
    __slots__ = ("trigger",)
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    trigger: str
    def __init__(self, trigger: _Optional[str] = ...) -> None: ...

class SiteProgress(_message.Message):
    __slots__ = ("site", "phase", "state", "events_in", "events_out", "error", "expected_in", "expected_out")
    SITE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_IN_FIELD_NUMBER: _ClassVar[int]
    EVENTS_OUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_IN_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_OUT_FIELD_NUMBER: _ClassVar[int]
    site: str
    phase: str
    state: str
    events_in: int
    events_out: int
    error: str
    expected_in: int
    expected_out: int
    def __init__(self, site: _Optional[str] = ..., phase: _Optional[str] = ..., state: _Optional[str] = ..., events_in: _Optional[int] = ..., events_out: _Optional[int] = ..., error: _Optional[str] = ..., expected_in: _Optional[int] = ..., expected_out: _Optional[int] = ...) -> None: ...

class SiteReport(_message.Message):
    __slots__ = ("site", "outcome", "events_in", "events_out", "parked", "errors", "duration_ms", "clock_offset_us", "silent", "cert_days_left", "unreachable", "lost_guards", "tables_in", "tables_out")
    class TablesInEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class TablesOutEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SITE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EVENTS_IN_FIELD_NUMBER: _ClassVar[int]
    EVENTS_OUT_FIELD_NUMBER: _ClassVar[int]
    PARKED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_US_FIELD_NUMBER: _ClassVar[int]
    SILENT_FIELD_NUMBER: _ClassVar[int]
    CERT_DAYS_LEFT_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_FIELD_NUMBER: _ClassVar[int]
    LOST_GUARDS_FIELD_NUMBER: _ClassVar[int]
    TABLES_IN_FIELD_NUMBER: _ClassVar[int]
    TABLES_OUT_FIELD_NUMBER: _ClassVar[int]
    site: str
    outcome: str
    events_in: int
    events_out: int
    parked: int
    errors: _containers.RepeatedScalarFieldContainer[str]
    duration_ms: int
    clock_offset_us: int
    silent: bool
    cert_days_left: int
    unreachable: bool
    lost_guards: _containers.RepeatedScalarFieldContainer[str]
    tables_in: _containers.ScalarMap[str, int]
    tables_out: _containers.ScalarMap[str, int]
    def __init__(self, site: _Optional[str] = ..., outcome: _Optional[str] = ..., events_in: _Optional[int] = ..., events_out: _Optional[int] = ..., parked: _Optional[int] = ..., errors: _Optional[_Iterable[str]] = ..., duration_ms: _Optional[int] = ..., clock_offset_us: _Optional[int] = ..., silent: bool = ..., cert_days_left: _Optional[int] = ..., unreachable: bool = ..., lost_guards: _Optional[_Iterable[str]] = ..., tables_in: _Optional[_Mapping[str, int]] = ..., tables_out: _Optional[_Mapping[str, int]] = ...) -> None: ...

class RoundReport(_message.Message):
    __slots__ = ("id", "trigger", "started", "ended", "outcome", "sites", "new_conflicts", "purged_segments", "siege_cert_days_left", "siege_disk_free_mb", "siege_stored_events", "analysis", "note", "siege_lost_guards", "held", "alert_problems")
    ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    NEW_CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    PURGED_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    SIEGE_CERT_DAYS_LEFT_FIELD_NUMBER: _ClassVar[int]
    SIEGE_DISK_FREE_MB_FIELD_NUMBER: _ClassVar[int]
    SIEGE_STORED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    SIEGE_LOST_GUARDS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    ALERT_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    id: int
    trigger: str
    started: str
    ended: str
    outcome: str
    sites: _containers.RepeatedCompositeFieldContainer[SiteReport]
    new_conflicts: int
    purged_segments: int
    siege_cert_days_left: int
    siege_disk_free_mb: int
    siege_stored_events: int
    analysis: _containers.RepeatedCompositeFieldContainer[TableAnalysis]
    note: str
    siege_lost_guards: _containers.RepeatedScalarFieldContainer[str]
    held: _containers.RepeatedCompositeFieldContainer[HeldTransaction]
    alert_problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., trigger: _Optional[str] = ..., started: _Optional[str] = ..., ended: _Optional[str] = ..., outcome: _Optional[str] = ..., sites: _Optional[_Iterable[_Union[SiteReport, _Mapping]]] = ..., new_conflicts: _Optional[int] = ..., purged_segments: _Optional[int] = ..., siege_cert_days_left: _Optional[int] = ..., siege_disk_free_mb: _Optional[int] = ..., siege_stored_events: _Optional[int] = ..., analysis: _Optional[_Iterable[_Union[TableAnalysis, _Mapping]]] = ..., note: _Optional[str] = ..., siege_lost_guards: _Optional[_Iterable[str]] = ..., held: _Optional[_Iterable[_Union[HeldTransaction, _Mapping]]] = ..., alert_problems: _Optional[_Iterable[str]] = ...) -> None: ...

class TableAnalysis(_message.Message):
    __slots__ = ("site", "table", "reference", "matched", "missing", "extra", "different", "examples", "repaired", "error", "bytes_moved", "held", "held_keys")
    SITE_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    DIFFERENT_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    REPAIRED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BYTES_MOVED_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    HELD_KEYS_FIELD_NUMBER: _ClassVar[int]
    site: str
    table: str
    reference: str
    matched: int
    missing: int
    extra: int
    different: int
    examples: _containers.RepeatedScalarFieldContainer[str]
    repaired: int
    error: str
    bytes_moved: int
    held: int
    held_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, site: _Optional[str] = ..., table: _Optional[str] = ..., reference: _Optional[str] = ..., matched: _Optional[int] = ..., missing: _Optional[int] = ..., extra: _Optional[int] = ..., different: _Optional[int] = ..., examples: _Optional[_Iterable[str]] = ..., repaired: _Optional[int] = ..., error: _Optional[str] = ..., bytes_moved: _Optional[int] = ..., held: _Optional[int] = ..., held_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class AnalyseRequest(_message.Message):
    __slots__ = ("tables", "sites", "repair", "prefer", "adopt")
    TABLES_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FIELD_NUMBER: _ClassVar[int]
    PREFER_FIELD_NUMBER: _ClassVar[int]
    ADOPT_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedScalarFieldContainer[str]
    sites: _containers.RepeatedScalarFieldContainer[str]
    repair: bool
    prefer: str
    adopt: bool
    def __init__(self, tables: _Optional[_Iterable[str]] = ..., sites: _Optional[_Iterable[str]] = ..., repair: bool = ..., prefer: _Optional[str] = ..., adopt: bool = ...) -> None: ...

class AnalyseProgress(_message.Message):
    __slots__ = ("site", "table", "rows_done", "rows_total", "state")
    SITE_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ROWS_DONE_FIELD_NUMBER: _ClassVar[int]
    ROWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    site: str
    table: str
    rows_done: int
    rows_total: int
    state: str
    def __init__(self, site: _Optional[str] = ..., table: _Optional[str] = ..., rows_done: _Optional[int] = ..., rows_total: _Optional[int] = ..., state: _Optional[str] = ...) -> None: ...

class AnalyseEvent(_message.Message):
    __slots__ = ("progress", "done")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    progress: AnalyseProgress
    done: RoundReport
    def __init__(self, progress: _Optional[_Union[AnalyseProgress, _Mapping]] = ..., done: _Optional[_Union[RoundReport, _Mapping]] = ...) -> None: ...

class RoundEvent(_message.Message):
    __slots__ = ("progress", "done")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    progress: SiteProgress
    done: RoundReport
    def __init__(self, progress: _Optional[_Union[SiteProgress, _Mapping]] = ..., done: _Optional[_Union[RoundReport, _Mapping]] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StopReply(_message.Message):
    __slots__ = ("was_running",)
    WAS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    was_running: bool
    def __init__(self, was_running: bool = ...) -> None: ...

class ReportsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ReportsReply(_message.Message):
    __slots__ = ("reports",)
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    reports: _containers.RepeatedCompositeFieldContainer[RoundReport]
    def __init__(self, reports: _Optional[_Iterable[_Union[RoundReport, _Mapping]]] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class TestRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SiteTest(_message.Message):
    __slots__ = ("site", "address", "reachable", "identity", "cert_days_left", "node_version", "schema_fingerprint", "versions_match", "database_ok", "clock_offset_us", "latency_us", "problems", "address_source", "warnings", "coordinator")
    SITE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CERT_DAYS_LEFT_FIELD_NUMBER: _ClassVar[int]
    NODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_MATCH_FIELD_NUMBER: _ClassVar[int]
    DATABASE_OK_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_US_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_SOURCE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    site: str
    address: str
    reachable: bool
    identity: str
    cert_days_left: int
    node_version: str
    schema_fingerprint: str
    versions_match: bool
    database_ok: bool
    clock_offset_us: int
    latency_us: int
    problems: _containers.RepeatedScalarFieldContainer[str]
    address_source: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    coordinator: bool
    def __init__(self, site: _Optional[str] = ..., address: _Optional[str] = ..., reachable: bool = ..., identity: _Optional[str] = ..., cert_days_left: _Optional[int] = ..., node_version: _Optional[str] = ..., schema_fingerprint: _Optional[str] = ..., versions_match: bool = ..., database_ok: bool = ..., clock_offset_us: _Optional[int] = ..., latency_us: _Optional[int] = ..., problems: _Optional[_Iterable[str]] = ..., address_source: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., coordinator: bool = ...) -> None: ...

class TestReply(_message.Message):
    __slots__ = ("sites",)
    SITES_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedCompositeFieldContainer[SiteTest]
    def __init__(self, sites: _Optional[_Iterable[_Union[SiteTest, _Mapping]]] = ...) -> None: ...

class MeshStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SiteStatus(_message.Message):
    __slots__ = ("site", "reachable", "last_complete_sync", "published", "held_here", "backlog", "parked", "clock_offset_us", "problem", "schema_fingerprint", "schema_changes", "kept_values", "address", "dials_in", "key_warnings", "lost_guards", "decommissioned")
    SITE_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LAST_COMPLETE_SYNC_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    HELD_HERE_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    PARKED_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_US_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_CHANGES_FIELD_NUMBER: _ClassVar[int]
    KEPT_VALUES_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DIALS_IN_FIELD_NUMBER: _ClassVar[int]
    KEY_WARNINGS_FIELD_NUMBER: _ClassVar[int]
    LOST_GUARDS_FIELD_NUMBER: _ClassVar[int]
    DECOMMISSIONED_FIELD_NUMBER: _ClassVar[int]
    site: str
    reachable: bool
    last_complete_sync: str
    published: int
    held_here: int
    backlog: int
    parked: int
    clock_offset_us: int
    problem: str
    schema_fingerprint: str
    schema_changes: _containers.RepeatedScalarFieldContainer[str]
    kept_values: _containers.RepeatedScalarFieldContainer[str]
    address: str
    dials_in: bool
    key_warnings: _containers.RepeatedScalarFieldContainer[str]
    lost_guards: _containers.RepeatedScalarFieldContainer[str]
    decommissioned: str
    def __init__(self, site: _Optional[str] = ..., reachable: bool = ..., last_complete_sync: _Optional[str] = ..., published: _Optional[int] = ..., held_here: _Optional[int] = ..., backlog: _Optional[int] = ..., parked: _Optional[int] = ..., clock_offset_us: _Optional[int] = ..., problem: _Optional[str] = ..., schema_fingerprint: _Optional[str] = ..., schema_changes: _Optional[_Iterable[str]] = ..., kept_values: _Optional[_Iterable[str]] = ..., address: _Optional[str] = ..., dials_in: bool = ..., key_warnings: _Optional[_Iterable[str]] = ..., lost_guards: _Optional[_Iterable[str]] = ..., decommissioned: _Optional[str] = ...) -> None: ...

class MeshStatusReply(_message.Message):
    __slots__ = ("coordinator", "conflicts", "awaiting_decision", "sites", "round_running", "schema_fingerprint", "schema_changes", "kept_values", "role", "key_warnings", "lost_guards", "alert_problems", "next_round", "continuous")
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    AWAITING_DECISION_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    ROUND_RUNNING_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_CHANGES_FIELD_NUMBER: _ClassVar[int]
    KEPT_VALUES_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    KEY_WARNINGS_FIELD_NUMBER: _ClassVar[int]
    LOST_GUARDS_FIELD_NUMBER: _ClassVar[int]
    ALERT_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ROUND_FIELD_NUMBER: _ClassVar[int]
    CONTINUOUS_FIELD_NUMBER: _ClassVar[int]
    coordinator: str
    conflicts: int
    awaiting_decision: int
    sites: _containers.RepeatedCompositeFieldContainer[SiteStatus]
    round_running: bool
    schema_fingerprint: str
    schema_changes: _containers.RepeatedScalarFieldContainer[str]
    kept_values: _containers.RepeatedScalarFieldContainer[str]
    role: str
    key_warnings: _containers.RepeatedScalarFieldContainer[str]
    lost_guards: _containers.RepeatedScalarFieldContainer[str]
    alert_problems: _containers.RepeatedScalarFieldContainer[str]
    next_round: str
    continuous: bool
    def __init__(self, coordinator: _Optional[str] = ..., conflicts: _Optional[int] = ..., awaiting_decision: _Optional[int] = ..., sites: _Optional[_Iterable[_Union[SiteStatus, _Mapping]]] = ..., round_running: bool = ..., schema_fingerprint: _Optional[str] = ..., schema_changes: _Optional[_Iterable[str]] = ..., kept_values: _Optional[_Iterable[str]] = ..., role: _Optional[str] = ..., key_warnings: _Optional[_Iterable[str]] = ..., lost_guards: _Optional[_Iterable[str]] = ..., alert_problems: _Optional[_Iterable[str]] = ..., next_round: _Optional[str] = ..., continuous: bool = ...) -> None: ...

class ConflictsRequest(_message.Message):
    __slots__ = ("table", "reapply", "ack", "ack_before", "all")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    REAPPLY_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    ACK_BEFORE_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    table: str
    reapply: str
    ack: str
    ack_before: str
    all: bool
    def __init__(self, table: _Optional[str] = ..., reapply: _Optional[str] = ..., ack: _Optional[str] = ..., ack_before: _Optional[str] = ..., all: bool = ...) -> None: ...

class ConflictRecord(_message.Message):
    __slots__ = ("id", "recorded", "table", "key", "kind", "column", "losing_value", "current_value", "loser", "winner", "state", "seen", "changed")
    ID_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    LOSING_VALUE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VALUE_FIELD_NUMBER: _ClassVar[int]
    LOSER_FIELD_NUMBER: _ClassVar[int]
    WINNER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SEEN_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    id: str
    recorded: str
    table: str
    key: str
    kind: str
    column: str
    losing_value: str
    current_value: str
    loser: str
    winner: str
    state: str
    seen: bool
    changed: str
    def __init__(self, id: _Optional[str] = ..., recorded: _Optional[str] = ..., table: _Optional[str] = ..., key: _Optional[str] = ..., kind: _Optional[str] = ..., column: _Optional[str] = ..., losing_value: _Optional[str] = ..., current_value: _Optional[str] = ..., loser: _Optional[str] = ..., winner: _Optional[str] = ..., state: _Optional[str] = ..., seen: bool = ..., changed: _Optional[str] = ...) -> None: ...

class ConflictsReply(_message.Message):
    __slots__ = ("conflicts", "reapplied", "acknowledged", "seen_left_out")
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    REAPPLIED_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    SEEN_LEFT_OUT_FIELD_NUMBER: _ClassVar[int]
    conflicts: _containers.RepeatedCompositeFieldContainer[ConflictRecord]
    reapplied: str
    acknowledged: int
    seen_left_out: int
    def __init__(self, conflicts: _Optional[_Iterable[_Union[ConflictRecord, _Mapping]]] = ..., reapplied: _Optional[str] = ..., acknowledged: _Optional[int] = ..., seen_left_out: _Optional[int] = ...) -> None: ...

class DecommissionRequest(_message.Message):
    __slots__ = ("site",)
    SITE_FIELD_NUMBER: _ClassVar[int]
    site: str
    def __init__(self, site: _Optional[str] = ...) -> None: ...

class DecommissionReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("site", "resync")
    SITE_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    site: str
    resync: bool
    def __init__(self, site: _Optional[str] = ..., resync: bool = ...) -> None: ...

class JoinProgress(_message.Message):
    __slots__ = ("site", "phase", "bytes_done", "bytes_total")
    SITE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    site: str
    phase: str
    bytes_done: int
    bytes_total: int
    def __init__(self, site: _Optional[str] = ..., phase: _Optional[str] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ...) -> None: ...

class JoinEvent(_message.Message):
    __slots__ = ("progress", "done")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    progress: JoinProgress
    done: RoundReport
    def __init__(self, progress: _Optional[_Union[JoinProgress, _Mapping]] = ..., done: _Optional[_Union[RoundReport, _Mapping]] = ...) -> None: ...

class HeldRow(_message.Message):
    __slots__ = ("table", "op", "key", "values", "key_data")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    KEY_DATA_FIELD_NUMBER: _ClassVar[int]
    table: str
    op: str
    key: str
    values: _containers.RepeatedScalarFieldContainer[str]
    key_data: bytes
    def __init__(self, table: _Optional[str] = ..., op: _Optional[str] = ..., key: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ..., key_data: _Optional[bytes] = ...) -> None: ...

class HeldTransaction(_message.Message):
    __slots__ = ("site", "origin", "incarnation", "first_seq", "last_seq", "state", "message", "since", "last_tried", "attempts", "past_limit", "rows", "rows_note", "todo", "reason", "reported", "behind")
    SITE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    LAST_TRIED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PAST_LIMIT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_NOTE_FIELD_NUMBER: _ClassVar[int]
    TODO_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    BEHIND_FIELD_NUMBER: _ClassVar[int]
    site: str
    origin: str
    incarnation: int
    first_seq: int
    last_seq: int
    state: str
    message: str
    since: str
    last_tried: str
    attempts: int
    past_limit: bool
    rows: _containers.RepeatedCompositeFieldContainer[HeldRow]
    rows_note: str
    todo: str
    reason: str
    reported: str
    behind: int
    def __init__(self, site: _Optional[str] = ..., origin: _Optional[str] = ..., incarnation: _Optional[int] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., state: _Optional[str] = ..., message: _Optional[str] = ..., since: _Optional[str] = ..., last_tried: _Optional[str] = ..., attempts: _Optional[int] = ..., past_limit: bool = ..., rows: _Optional[_Iterable[_Union[HeldRow, _Mapping]]] = ..., rows_note: _Optional[str] = ..., todo: _Optional[str] = ..., reason: _Optional[str] = ..., reported: _Optional[str] = ..., behind: _Optional[int] = ...) -> None: ...

class HeldRequest(_message.Message):
    __slots__ = ("sites", "retry")
    SITES_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedScalarFieldContainer[str]
    retry: bool
    def __init__(self, sites: _Optional[_Iterable[str]] = ..., retry: bool = ...) -> None: ...

class HeldReply(_message.Message):
    __slots__ = ("held", "problems", "retried")
    HELD_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    held: _containers.RepeatedCompositeFieldContainer[HeldTransaction]
    problems: _containers.RepeatedScalarFieldContainer[str]
    retried: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, held: _Optional[_Iterable[_Union[HeldTransaction, _Mapping]]] = ..., problems: _Optional[_Iterable[str]] = ..., retried: _Optional[_Iterable[str]] = ...) -> None: ...

class AlertTestRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AlertTestReply(_message.Message):
    __slots__ = ("sent", "said", "problem", "to")
    SENT_FIELD_NUMBER: _ClassVar[int]
    SAID_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    sent: bool
    said: _containers.RepeatedScalarFieldContainer[str]
    problem: str
    to: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sent: bool = ..., said: _Optional[_Iterable[str]] = ..., problem: _Optional[str] = ..., to: _Optional[_Iterable[str]] = ...) -> None: ...
