/** Errors that causeway raises, each with what to do about it. */

/** Base class: a message a user can act on, and the errno behind it if any. */
export class CausewayError extends Error {
  readonly errno: number | undefined;
  constructor(message: string, errno?: number) {
    super(message);
    this.name = 'CausewayError';
    this.errno = errno;
  }
}

/** The kernel lacks something the shim needs; names the feature and the kernel that has it. */
export class NotSupportedError extends CausewayError {
  readonly feature: string;
  constructor(feature: string, since: string, detail?: string) {
    super(`${feature} is not supported here (needs Linux ${since} or later)${detail ? `: ${detail}` : ''}`);
    this.name = 'NotSupportedError';
    this.feature = feature;
  }
}

/** The caller lacks the privileges to load BPF programs or create cgroups. */
export class PermissionError extends CausewayError {
  constructor(what: string) {
    super(`${what} needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN): run it with sudo`);
    this.name = 'PermissionError';
  }
}

/** A thread or process that does not exist, or is not part of the run. */
export class TargetError extends CausewayError {
  constructor(message: string) {
    super(message);
    this.name = 'TargetError';
  }
}

/** Wraps an error thrown by the addon, keeping its errno. */
export function fromNative(err: unknown): CausewayError {
  if (err instanceof CausewayError) return err;
  const e = err as { message?: string; errno?: number };
  return new CausewayError(e.message ?? String(err), e.errno);
}
