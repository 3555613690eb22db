import assert from 'node:assert/strict';
import { mergeExtraLines } from '../../../src/iptables-rules/jump-plan.js';
import { ChunkingError, chunkedRestoreInput } from '../../../src/iptables/render-chunks.js';
import { run } from '../../../src/util/exec.js';
import { requireRoot } from '../../support/sandbox.js';
import { ep, render, service } from './fixtures.js';

/** The chunked full sync's input (render-chunks.ts): pure checks, and one real restore. */

interface Chunk {
  readonly table: string;
  readonly lines: string[];
}

function parseChunks(pieces: string[]): Chunk[] {
  return pieces.map((p) => {
    const lines = p.trimEnd().split('\n');
    assert.match(lines[0]!, /^\*\w+$/, 'each piece starts with its table');
    assert.equal(lines[lines.length - 1], 'COMMIT', 'each piece ends with COMMIT');
    return { table: lines[0]!.slice(1), lines: lines.slice(1, -1) };
  });
}

const chainOf = (line: string): string => line.split(' ')[line.startsWith(':') ? 0 : 1]!.replace(/^:/, '');

const EXTRAS = new Map([
  ['nat', ['-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES']],
  ['filter', [':KUBE-PROXY-CANARY - [0:0]']],
  ['mangle', [':KUBE-PROXY-CANARY - [0:0]']],
]);

/** Eight Services, some with two endpoints and a NodePort, one stale chain; before the extras. */
function sampleRendered(): string {
  const services = Array.from({ length: 8 }, (_, i) =>
    service(`ns/s${i}`, {
      type: i % 2 ? 'NodePort' : 'ClusterIP',
      clusterIP: `10.96.0.${i + 1}`,
      ports: [
        {
          port: 80,
          ...(i % 2 ? { nodePort: 30080 + i } : {}),
          endpoints: [ep(`10.244.0.${i + 10}`, 8080), ep(`10.244.1.${i + 10}`, 8080)],
        },
      ],
    }),
  );
  return render(services, {}, { existingServiceChains: new Set(['KUBE-SVC-STALESTALESTALE1']) }).restoreInput;
}

/** The same with the built-in jumps and canaries merged in (what one transaction would write). */
function sampleInput(): string {
  return mergeExtraLines(sampleRendered(), EXTRAS);
}

describe('chunked --noflush full sync input (pure)', () => {
  it('keeps every line, each chain whole in one transaction, after the chains it jumps to', () => {
    const input = sampleInput();
    const chunks = parseChunks(chunkedRestoreInput(input, 5));
    assert.ok(chunks.length > 4, `${chunks.length} transactions`);
    // Same lines (order within a chain kept), nothing added but table headers and COMMITs.
    const body = (text: string) =>
      text.split('\n').filter((l) => l !== '' && l !== 'COMMIT' && !l.startsWith('*'));
    assert.deepEqual(chunks.flatMap((c) => c.lines).sort(), body(input).sort());
    for (const table of ['filter', 'nat']) {
      const inOrder = chunks.filter((c) => c.table === table).flatMap((c) => c.lines);
      const original = body(input.slice(input.indexOf(`*${table}\n`)).split('COMMIT')[0]!);
      for (const chain of new Set(original.filter((l) => l.startsWith('-A ')).map(chainOf))) {
        const pick = (ls: string[]) => ls.filter((l) => l.startsWith(`-A ${chain} `));
        assert.deepEqual(pick(inOrder), pick(original), `rule order of ${chain}`);
      }
    }
    const committedAt = new Map<string, number>();
    chunks.forEach((c, i) => {
      const declared = c.lines.filter((l) => l.startsWith(':')).map(chainOf);
      assert.ok(declared.length <= 5, `transaction ${i} declares ${declared.length} chains`);
      for (const d of declared) committedAt.set(`${c.table}/${d}`, i);
      for (const l of c.lines.filter((x) => x.startsWith('-A '))) {
        const chain = chainOf(l);
        if (committedAt.has(`${c.table}/${chain}`))
          assert.equal(committedAt.get(`${c.table}/${chain}`), i, `${chain}: declared and filled together`);
        const target = / -[jg] (KUBE-\S+)/.exec(l)?.[1];
        if (target && committedAt.has(`${c.table}/${target}`) === false && input.includes(`:${target} `))
          assert.fail(`${chain} jumps to ${target} before it is written`);
      }
    });
  });

  it('flushes and deletes stale chains last, after the jumps from built-in chains', () => {
    const chunks = parseChunks(chunkedRestoreInput(sampleInput(), 5));
    const nat = chunks.filter((c) => c.table === 'nat');
    const last = nat[nat.length - 1]!.lines;
    assert.deepEqual(last, [
      ':KUBE-SVC-STALESTALESTALE1 - [0:0]',
      '-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      '-X KUBE-SVC-STALESTALESTALE1',
    ]);
    for (const c of nat.slice(0, -1)) assert.ok(!c.lines.some((l) => l.includes('STALESTALE')));
  });

  it('fills a new chain that only new chains reach in parts of maxRules rules (a new node)', () => {
    const input = sampleInput();
    const chunks = parseChunks(
      chunkedRestoreInput(input, { maxChains: 100, maxRules: 2, exists: () => false }),
    );
    const body = (text: string) =>
      text.split('\n').filter((l) => l !== '' && l !== 'COMMIT' && !l.startsWith('*'));
    assert.deepEqual(chunks.flatMap((c) => c.lines).sort(), body(input).sort());
    const nat = chunks.filter((c) => c.table === 'nat');
    const declaring = nat.findIndex((c) => c.lines.includes(':KUBE-SERVICES - [0:0]'));
    const jumps = nat.findIndex((c) => c.lines.some((l) => l.startsWith('-I PREROUTING ')));
    const original = body(input.slice(input.indexOf('*nat\n')).split('COMMIT')[0]!);
    for (const chain of ['KUBE-SERVICES', 'KUBE-NODEPORTS']) {
      const pick = (ls: readonly string[]) => ls.filter((l) => l.startsWith(`-A ${chain} `));
      assert.ok(pick(original).length > 4, `${chain} has ${pick(original).length} rules`);
      // Declared with its first rules, the rest appended in order, in transactions that declare
      // nothing (so flush nothing), all before the built-in jumps make it reachable.
      const holding = nat.map((c, i) => [i, pick(c.lines).length] as const).filter(([, n]) => n > 0);
      assert.ok(holding.length > 1, `${chain} in ${holding.length} transactions`);
      assert.equal(holding[0]![0], declaring);
      for (const [i, n] of holding) {
        assert.ok(n <= 2, `transaction ${i}: ${n} rules of ${chain}`);
        assert.ok(i < jumps, `transaction ${i} after the built-in jumps (${jumps})`);
        if (i !== declaring) assert.ok(!nat[i]!.lines.some((l) => l.startsWith(':')));
      }
      assert.deepEqual(pick(nat.flatMap((c) => c.lines)), pick(original), `rule order of ${chain}`);
    }
  });

  it('keeps a chain whole when it exists, or when an existing chain jumps to it', () => {
    const input = sampleInput();
    const whole = chunkedRestoreInput(input, 100);
    const limits = { maxChains: 100, maxRules: 2 };
    assert.deepEqual(chunkedRestoreInput(input, limits), whole);
    assert.deepEqual(chunkedRestoreInput(input, { ...limits, exists: () => true }), whole);
    // Only KUBE-NODEPORTS is new, but KUBE-SERVICES (reachable, perhaps) jumps to it: whole.
    const newNodePorts = (t: string, c: string) => !(t === 'nat' && c === 'KUBE-NODEPORTS');
    assert.deepEqual(chunkedRestoreInput(input, { ...limits, exists: newNodePorts }), whole);
  });

  it('takes the extras apart from the input, as if merged (no copy of the input)', () => {
    assert.deepEqual(chunkedRestoreInput(sampleRendered(), 5, EXTRAS), chunkedRestoreInput(sampleInput(), 5));
  });

  it('writes one transaction per table when the chains fit, and refuses a jump cycle', () => {
    const pieces = chunkedRestoreInput(sampleInput(), 100_000);
    assert.deepEqual(
      parseChunks(pieces).map((c) => c.table),
      ['filter', 'nat', 'nat', 'mangle'],
    );
    const cycle = '*nat\n:A - [0:0]\n:B - [0:0]\n-A A -j B\n-A B -j A\nCOMMIT\n';
    assert.throws(() => chunkedRestoreInput(cycle, 10), ChunkingError);
    assert.throws(() => chunkedRestoreInput('*nat\n:A - [0:0]\n', 10), /no COMMIT/);
  });
});

describe('chunked --noflush full sync input (kernel, private netns)', function () {
  this.timeout(30_000);
  before(function () {
    requireRoot(this);
  });

  it('leaves the kernel exactly as one transaction of the same input does', async () => {
    const input = sampleInput();
    const pieces = chunkedRestoreInput(input, 3);
    // Both into the same kind of kernel state: a stale chain referenced by nothing, a foreign rule.
    const script = `
set -e
prep() { iptables -t nat -N KUBE-SVC-STALESTALESTALE1; iptables -t nat -N FOREIGN; iptables -t nat -A FOREIGN -j RETURN; }
prep
iptables-restore --noflush < "$D/one"
iptables-save | grep -v '^#' > "$D/save-one"
iptables -t nat -F; iptables -t nat -X; iptables -F; iptables -X
prep
iptables-restore --noflush < "$D/chunked"
iptables-save | grep -v '^#' > "$D/save-chunked"
`;
    const dir = (await run(['mktemp', '-d'])).stdout.trim();
    try {
      const { writeFile, readFile } = await import('node:fs/promises');
      await writeFile(`${dir}/one`, input);
      await writeFile(`${dir}/chunked`, pieces.join(''));
      const res = await run(['unshare', '-n', 'bash', '-c', script], { env: { D: dir }, allowFailure: true });
      assert.equal(res.exitCode, 0, res.stderr);
      const one = await readFile(`${dir}/save-one`, 'utf8');
      assert.match(one, /^-A KUBE-SERVICES .*-j KUBE-SVC-/m);
      assert.doesNotMatch(one, /STALESTALE/);
      assert.match(one, /^-A FOREIGN -j RETURN$/m);
      assert.equal(await readFile(`${dir}/save-chunked`, 'utf8'), one);
    } finally {
      await run(['rm', '-rf', dir]);
    }
  });
});
