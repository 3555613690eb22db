import { KUBE_EXTERNAL_SERVICES, KUBE_NODEPORTS, KUBE_SERVICES } from './names.js';
import { ruleComment, rulesOf, type SavedRuleset } from './save-parse.js';

/**
 * The Services whose rules the kernel holds, read from the comments of the entry rules
 * (`"namespace/name:port cluster IP"`, `"namespace/name:port has no endpoints"` …) as kube-proxy
 * and svcplane write them: the safety valve's "programmed Services" before this process wrote any.
 */
const ENTRY_CHAINS: readonly (readonly [table: string, chain: string])[] = [
  ['nat', KUBE_SERVICES],
  ['nat', KUBE_NODEPORTS],
  ['filter', KUBE_SERVICES],
  ['filter', KUBE_EXTERNAL_SERVICES],
];

/** A DNS-1123 namespace, `/`, a DNS-1035/1123 name, then `:port` or the end of the first word. */
const SERVICE_COMMENT =
  /^([a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)\/([a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?)(?::\S*)?(?:\s|$)/;

/** `namespace/name` of every Service with an entry rule in `saved`. Pure. */
export function programmedServiceKeys(saved: SavedRuleset): Set<string> {
  const out = new Set<string>();
  for (const [table, chain] of ENTRY_CHAINS) {
    for (const rule of rulesOf(saved, table, chain)) {
      const m = SERVICE_COMMENT.exec(ruleComment(rule) ?? '');
      if (m) out.add(`${m[1]}/${m[2]}`);
    }
  }
  return out;
}
