/** causeway as a library: the runtime and its actor API, the shim, the record codec and events, the trace store. */
export { Shim, Floor, COUNTER_NAMES, DROP_COUNTERS, DEFAULT_OPT_KIND, DEFAULT_OPT_EXID } from './kernel/shim';
export type { Counters, ShimOptions } from './kernel/shim';
export { run, Runtime, resolveCommand, summaryLine } from './runtime/runtime';
export type { RunOptions, RunResult } from './runtime/runtime';
export type { Actor, ActorContext, Target, RecordPatch, JoinRule, PolicyApi, HookName } from './actor/types';
export { channelTarget } from './actor/types';
export { loadActor, parseActorSpec } from './actor/load';
export { FieldRegistry, FieldLayoutError } from './actor/fields';
export type { FieldDecl, FieldType, FieldValue } from './actor/fields';
export type { ActorStats } from './runtime/dispatch';
export { RunCgroup, cgroup2Mount } from './kernel/cgroup';
export {
  newRecord,
  newTraceId,
  newEventId,
  encodeRecord,
  decodeRecord,
  RECORD_BYTES,
  RECORD_VERSION,
  ACTOR_BYTES,
} from './kernel/record';
export type { CausalRecord } from './kernel/record';
export { decodeEvents, eventToJson, channelName } from './kernel/events';
export { parseTrust, DEFAULT_TRUST } from './kernel/trust';
export type { CausalEvent, Channel, EventType } from './kernel/events';
export { TraceStore, unpackBlob, defaultDbPath, SCHEMA_VERSION, BLOB_FORMAT } from './tracer/store';
export type { TraceSummary } from './tracer/store';
export type { TraceEvent } from './tracer/graph';
export { runChecks } from './doctor';
export type { Check } from './doctor';
export { CausewayError, NotSupportedError, PermissionError, TargetError } from './errors';
