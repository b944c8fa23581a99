/** The meta-applications shipped with causeway, by the name `--actor` takes. */
import type { Actor } from '../actor/types';
import { ingressMint } from './ingress-mint';
import { accountant } from './accountant';

export const BUILTIN_ACTORS: Record<string, (options: Record<string, unknown>) => Actor | Promise<Actor>> = {
  'ingress-mint': ingressMint,
  accountant,
};
