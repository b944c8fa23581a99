/**
 * Loading actors: built-in ones by name, user ones from a module path (ESM or
 * CommonJS, JavaScript or compiled TypeScript).
 *
 * A spec is NAME_OR_PATH, optionally followed by ":" and options, either JSON
 * (`accountant:{"field":"tenant"}`) or key=value pairs separated by commas
 * (`ingress-mint:ports=8080+8443,priority=5`; "+" separates list items;
 * numbers and true/false are converted).
 *
 * A module may export (as default, `actor`, or `create`): an actor object, a
 * factory function (options) => actor, or a class whose constructor takes the
 * options.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { CausewayError } from '../errors';
import { HOOK_NAMES, type Actor } from './types';
import { BUILTIN_ACTORS } from '../actors';

/** A real dynamic import(): TypeScript's CommonJS output would turn `import()` into require(), which cannot load ESM. */
const importModule = new Function('specifier', 'return import(specifier)') as (s: string) => Promise<Record<string, unknown>>;

export interface ActorSpec {
  ref: string;
  options: Record<string, unknown>;
}

/** Splits "NAME_OR_PATH[:OPTIONS]". */
export function parseActorSpec(spec: string): ActorSpec {
  if (!spec) throw new CausewayError('--actor needs a built-in name or a module path');
  // A path that exists wins, even with a ":" in it.
  if (fs.existsSync(spec)) return { ref: spec, options: {} };
  const i = spec.indexOf(':');
  if (i < 0) return { ref: spec, options: {} };
  const ref = spec.slice(0, i);
  const text = spec.slice(i + 1);
  return { ref, options: parseOptions(text, ref) };
}

function parseOptions(text: string, ref: string): Record<string, unknown> {
  if (text.trim().startsWith('{')) {
    try {
      const o = JSON.parse(text) as unknown;
      if (o && typeof o === 'object' && !Array.isArray(o)) return o as Record<string, unknown>;
    } catch (err) {
      throw new CausewayError(`the options of actor ${ref} are not valid JSON: ${(err as Error).message}`);
    }
    throw new CausewayError(`the options of actor ${ref} must be a JSON object`);
  }
  const out: Record<string, unknown> = {};
  for (const pair of text.split(',').filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new CausewayError(`actor ${ref}: options are key=value pairs separated by commas, not "${pair}"`);
    const key = pair.slice(0, eq);
    const raw = pair.slice(eq + 1);
    const items = raw.split('+').map(scalar);
    out[key] = raw.includes('+') ? items : items[0];
  }
  return out;
}

function scalar(s: string): unknown {
  if (s === 'true') return true;
  if (s === 'false') return false;
  if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
  return s;
}

/** Loads one actor from a spec; errors say what was wrong and what would work. */
export async function loadActor(spec: string | ActorSpec): Promise<Actor> {
  const { ref, options } = typeof spec === 'string' ? parseActorSpec(spec) : spec;
  const builtin = BUILTIN_ACTORS[ref];
  if (builtin) return checkActor(await builtin(options), ref);
  const looksLikePath = ref.includes('/') || ref.includes('.') || fs.existsSync(ref);
  if (!looksLikePath)
    throw new CausewayError(`no built-in actor "${ref}" (built-in: ${Object.keys(BUILTIN_ACTORS).join(', ')}); give a module path such as ./my-actor.js`);
  const file = path.resolve(ref);
  if (!fs.existsSync(file)) throw new CausewayError(`actor module ${file} does not exist`);
  let mod: Record<string, unknown>;
  try {
    mod = await importModule(pathToFileURL(file).href);
  } catch (err) {
    throw new CausewayError(`could not load actor module ${file}: ${(err as Error).message}`);
  }
  // CommonJS modules arrive as { default: module.exports }.
  const candidates = [mod.default, (mod.default as Record<string, unknown> | undefined)?.default, mod.actor, mod.create];
  const exp = candidates.find((c) => c !== undefined && c !== null);
  if (exp === undefined) throw new CausewayError(`actor module ${file} exports nothing usable: export an actor object, a factory function or a class (as default, "actor" or "create")`);
  let actor: unknown;
  try {
    actor = typeof exp === 'function' ? await instantiate(exp as (o: Record<string, unknown>) => unknown, options) : exp;
  } catch (err) {
    throw new CausewayError(`actor module ${file} failed to create its actor: ${(err as Error).message}`);
  }
  return checkActor(actor, path.basename(file).replace(/\.(c|m)?js$/, ''));
}

async function instantiate(f: (o: Record<string, unknown>) => unknown, options: Record<string, unknown>): Promise<unknown> {
  const isClass = /^class[\s{]/.test(Function.prototype.toString.call(f));
  return isClass ? new (f as unknown as new (o: Record<string, unknown>) => unknown)(options) : await f(options);
}

function checkActor(a: unknown, fallbackName: string): Actor {
  if (!a || typeof a !== 'object') throw new CausewayError(`actor ${fallbackName} is not an object`);
  const actor = a as Actor;
  if (actor.name === undefined) (actor as { name: string }).name = fallbackName;
  if (typeof actor.name !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(actor.name))
    throw new CausewayError(`actor ${fallbackName}: its name must be letters, digits, "-", "_" or ".", not ${JSON.stringify(actor.name)}`);
  for (const h of [...HOOK_NAMES, 'start', 'stop', 'events'] as const) {
    const f = (actor as unknown as Record<string, unknown>)[h];
    if (f !== undefined && typeof f !== 'function') throw new CausewayError(`actor ${actor.name}: ${h} must be a function`);
  }
  return actor;
}
