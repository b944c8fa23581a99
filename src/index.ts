/** causeway as a library: the shim, `run`, the record codec and events. */
export { Shim, Floor, COUNTER_NAMES, DROP_COUNTERS, DEFAULT_OPT_KIND, DEFAULT_OPT_EXID } from './shim';
export type { Counters, ShimOptions } from './shim';
export { run, resolveCommand, summaryLine } from './run';
export type { RunOptions, RunResult } from './run';
export { RunCgroup, cgroup2Mount } from './cgroup';
export {
  newRecord,
  newTraceId,
  newEventId,
  encodeRecord,
  decodeRecord,
  RECORD_BYTES,
  RECORD_VERSION,
  ACTOR_BYTES,
} from './record';
export type { CausalRecord } from './record';
export { decodeEvents, eventToJson, channelName } from './events';
export { parseTrust, DEFAULT_TRUST } from './trust';
export type { CausalEvent, Channel, EventType } from './events';
export { runChecks } from './doctor';
export type { Check } from './doctor';
export { CausewayError, NotSupportedError, PermissionError, TargetError } from './errors';
