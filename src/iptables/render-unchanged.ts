import { detached } from './render-lines.js';
import { isServiceChainName } from './names.js';

/**
 * Partial syncs skip fixed chains whose content did not change. The renderer writes KUBE-SERVICES,
 * KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES … in full on every sync (kube-proxy does too); at 10k
 * Services KUBE-SERVICES alone is ~9% of the full input, while a one-endpoint change leaves it
 * byte-for-byte the same (chain names hash the Service port, not its endpoints). With --noflush a
 * chain that is not declared is left alone, so dropping its `:CHAIN` line and its `-A` lines keeps
 * it as the kernel holds it. Per-service chains are already filtered by the renderer. Pure.
 */

/** Content (its `-A` lines, joined) of each fixed chain, by `table/chain`. */
export type FixedChainContents = ReadonlyMap<string, string>;

interface Section {
  readonly table: string;
  readonly lines: string[];
}

/** Fixed chains declared in `input`, with their rule lines in input order. */
export function fixedChainContents(input: string): Map<string, string> {
  const rules = new Map<string, string[]>();
  let table = '';
  for (let start = 0; start < input.length;) {
    let end = input.indexOf('\n', start);
    if (end === -1) end = input.length;
    const c = input.charCodeAt(start);
    if (c === 42 /* * */) {
      table = input.slice(start + 1, end);
    } else if (c === 58 /* : */) {
      const chain = word(input, start + 1, end);
      if (!isServiceChainName(chain)) rules.set(detached(`${table}/${chain}`), []);
    } else if (input.startsWith('-A ', start)) {
      const list = rules.get(`${table}/${word(input, start + 3, end)}`);
      list?.push(input.slice(start, end));
    }
    start = end + 1;
  }
  // detached: a one-rule chain's join is its line, a view into the whole input.
  return new Map([...rules].map(([k, v]) => [k, detached(v.join('\n'))]));
}

function word(text: string, from: number, end: number): string {
  const sp = text.indexOf(' ', from);
  return text.slice(from, sp === -1 || sp > end ? end : sp);
}

/**
 * `input` without the fixed chains whose content equals `previous` (declaration and rules dropped),
 * plus the contents to remember. A chain absent from `previous` is always written.
 */
export function dropUnchangedFixedChains(
  input: string,
  previous: FixedChainContents,
): { input: string; contents: Map<string, string>; dropped: string[] } {
  const contents = fixedChainContents(input);
  const unchanged = new Set<string>();
  for (const [key, text] of contents) if (previous.get(key) === text) unchanged.add(key);
  if (unchanged.size === 0) return { input, contents, dropped: [] };
  const sections: Section[] = [];
  let current: Section | undefined;
  const body = input.endsWith('\n') ? input.slice(0, -1) : input;
  for (const line of body.split('\n')) {
    if (line.startsWith('*')) {
      current = { table: line.slice(1), lines: [line] };
      sections.push(current);
      continue;
    }
    if (!current) continue;
    const chain = line.startsWith(':')
      ? line.slice(1).split(' ', 1)[0]
      : line.startsWith('-A ')
        ? line.slice(3).split(' ', 1)[0]
        : undefined;
    if (chain !== undefined && unchanged.has(`${current.table}/${chain}`)) continue;
    current.lines.push(line);
  }
  const out = sections.map((s) => s.lines.join('\n')).join('\n') + '\n';
  return { input: out, contents, dropped: [...unchanged].sort() };
}
