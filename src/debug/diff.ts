import type { ChainDrift, FamilyDrift } from '../iptables-rules/compare.js';
import { summaryLine } from '../iptables-rules/compare.js';

/** `svcplane diff`'s text output of the comparison in iptables-rules/compare.ts. */

/** The whole report as text: per family, each group's unified diffs, then a summary. */
export function formatDriftText(reports: readonly FamilyDrift[]): string {
  const out: string[] = [];
  for (const r of reports) {
    if (r.inSync) continue;
    for (const g of r.groups) {
      out.push(`=== ${r.family}: ${g.title} ===`);
      for (const c of g.chains) {
        const what = describeChain(c);
        out.push(`# ${c.table} ${c.chain}: ${what}`);
        if (c.patch !== '') out.push(c.patch);
      }
      out.push('');
    }
    if (r.missingJumps.length > 0) {
      out.push(`=== ${r.family}: jumps from built-in chains ===`);
      for (const j of r.missingJumps)
        out.push(`# ${j.table} ${j.chain}: missing jump to ${j.target}`, `-${j.rule}`);
      out.push('');
    }
  }
  out.push('Summary:');
  for (const r of reports) out.push(`  ${r.family}: ${summaryLine(r)}`);
  return `${out.join('\n')}\n`;
}

function describeChain(c: ChainDrift): string {
  const miss = c.changes.filter((x) => x.op === 'missing').length;
  const extra = c.changes.filter((x) => x.op === 'extra').length;
  const foreign = c.changes.filter((x) => x.foreign).length;
  const misplaced = c.changes.filter((x) => x.op === 'misplaced').length;
  const role = c.kind ? ` [${c.kind}${c.endpoint !== undefined ? ` → ${c.endpoint}` : ''}]` : '';
  const head = {
    changed: 'rules differ',
    missing: 'chain missing from the kernel',
    stale: 'stale chain (svcplane would delete it)',
    unknown: 'unknown chain (nothing writes it)',
  }[c.status];
  const parts = [
    miss ? `${miss} missing` : '',
    extra ? `${extra} extra${foreign ? ` (${foreign} foreign)` : ''}` : '',
    misplaced ? `${misplaced} misplaced` : '',
  ].filter((s) => s !== '');
  return `${head}${role}${parts.length ? `: ${parts.join(', ')}` : ''}`;
}
