/** The meta-applications shipped with causeway, by the name `--actor` takes. */
import type { Actor } from '../actor/types';
import { ingressMint } from './ingress-mint';
import { accountant } from './accountant';
import { scheduler } from './scheduler';

export const BUILTIN_ACTORS: Record<string, (options: Record<string, unknown>) => Actor | Promise<Actor>> = {
  'ingress-mint': ingressMint,
  accountant,
  scheduler,
};
