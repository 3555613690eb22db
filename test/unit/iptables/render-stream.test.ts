import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mergeExtraLines } from '../../../src/iptables-rules/jump-plan.js';
import { renderChunkedRestoreInput, renderRestoreInput } from '../../../src/iptables/render.js';
import { fixedChainContents } from '../../../src/iptables/render-unchanged.js';
import type { Service } from '../../../src/model/types.js';
import { run } from '../../../src/util/exec.js';
import { requireRoot } from '../../support/sandbox.js';
import { config, ep, NODE, service, state } from './fixtures.js';

/**
 * The streamed chunked full sync (render.ts, renderChunkedRestoreInput): transactions rendered one
 * at a time while iptables-restore reads them. Its rules must be the whole render's, chain for chain,
 * with render-chunks.ts's guarantees: each chain declared and filled in one transaction, after the
 * chains it jumps to, stale chains deleted last.
 */

const EXTRAS = new Map([
  ['nat', ['-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES']],
  ['filter', [':KUBE-PROXY-CANARY - [0:0]']],
  ['mangle', [':KUBE-PROXY-CANARY - [0:0]']],
]);
const STALE = 'KUBE-SVC-STALESTALESTALE1';

/** Every kind of Service chain: SVC/SEP, EXT (NodePort), FW (source ranges), SVL (local), affinity, none. */
function services(): Service[] {
  const out: Service[] = [];
  for (let i = 0; i < 12; i++) {
    const kind = i % 4;
    out.push(
      service(`ns/s${String(i).padStart(2, '0')}`, {
        type: kind === 0 ? 'ClusterIP' : kind === 1 ? 'NodePort' : 'LoadBalancer',
        clusterIP: `10.96.0.${i + 1}`,
        ...(kind >= 2 ? { lbIPs: [`203.0.113.${i}`], healthCheckNodePort: 32000 + i } : {}),
        ...(kind === 2 ? { sourceRanges: ['192.0.2.0/24'], eTP: 'Local' as const } : {}),
        ...(kind === 3 ? { affinity: { type: 'ClientIP' as const, timeoutSeconds: 600 } } : {}),
        ports: [
          {
            name: 'http',
            port: 80,
            ...(kind > 0 ? { nodePort: 30080 + i } : {}),
            endpoints:
              i === 5
                ? []
                : [ep(`10.244.0.${i + 10}`, 8080, { nodeName: NODE }), ep(`10.244.1.${i + 10}`, 8080)],
          },
          ...(i % 3 === 0
            ? [{ name: 'dns', protocol: 'UDP' as const, port: 53, endpoints: [ep('10.244.2.1', 53)] }]
            : []),
        ],
      }),
    );
  }
  return out;
}

const request = () => ({
  state: state(...services()),
  config: config(),
  existingServiceChains: new Set([STALE]),
});

interface Chunk {
  readonly table: string;
  readonly lines: string[];
}

function parseChunks(pieces: readonly string[]): Chunk[] {
  return pieces.map((p) => {
    const lines = p.trimEnd().split('\n');
    assert.match(lines[0]!, /^\*\w+$/, 'each piece starts with its table');
    assert.equal(lines[lines.length - 1], 'COMMIT', 'each piece ends with COMMIT');
    return { table: lines[0]!.slice(1), lines: lines.slice(1, -1) };
  });
}

const chainOf = (line: string): string => line.split(' ')[line.startsWith(':') ? 0 : 1]!.replace(/^:/, '');

/** Per `table/chain`: its rules in order; plus the other lines (declarations, -I, -X) as a sorted list. */
function byChain(tables: readonly Chunk[]): { rules: Map<string, string[]>; other: string[] } {
  const rules = new Map<string, string[]>();
  const other: string[] = [];
  for (const t of tables) {
    for (const l of t.lines) {
      if (l.startsWith('-A ')) {
        const k = `${t.table}/${chainOf(l)}`;
        rules.set(k, [...(rules.get(k) ?? []), l]);
      } else other.push(`${t.table} ${l}`);
    }
  }
  return { rules, other: other.sort() };
}

function streamed(maxChains: number) {
  const r = renderChunkedRestoreInput(request(), maxChains, EXTRAS);
  const pieces = [...r.pieces];
  return { pieces, result: r.result() };
}

describe('streamed chunked full sync input (pure)', () => {
  it('holds the whole render, chain for chain, and reports the same figures', () => {
    const whole = renderRestoreInput(request());
    const { pieces, result } = streamed(7);
    assert.ok(pieces.length >= 5, `${pieces.length} transactions`);
    const want = byChain(parseChunks(mergeExtraLines(whole.restoreInput, EXTRAS).split(/(?=^\*)/m)));
    const got = byChain(parseChunks(pieces));
    assert.deepEqual([...got.rules.keys()].sort(), [...want.rules.keys()].sort());
    for (const [k, rules] of want.rules) assert.deepEqual(got.rules.get(k), rules, `rules of ${k}`);
    assert.deepEqual(got.other, want.other);
    assert.deepEqual(result.counts, whole.counts);
    assert.deepEqual(result.noLocalEndpoints, whole.noLocalEndpoints);
    assert.deepEqual(result.skipped, whole.skipped);
    assert.deepEqual(result.staleChains, [STALE]);
    assert.deepEqual([...result.writtenServices], [...whole.writtenServices]);
    assert.deepEqual([...result.activeServiceChains].sort(), [...whole.activeServiceChains].sort());
    assert.deepEqual(fixedChainContents(result.fixedChains), fixedChainContents(whole.restoreInput));
    assert.equal(result.bytes, pieces.join('').length);
    assert.equal(result.lines, pieces.join('').split('\n').length - 1);
  });

  it('declares and fills each chain in one transaction, after the chains it jumps to; each Service whole', () => {
    const { pieces } = streamed(7);
    const chunks = parseChunks(pieces);
    const declaredAnywhere = new Set(
      chunks.flatMap((c) => c.lines.filter((l) => l.startsWith(':')).map((l) => `${c.table}/${chainOf(l)}`)),
    );
    const committedAt = new Map<string, number>();
    const serviceAt = new Map<string, number>();
    chunks.forEach((c, i) => {
      const declared = c.lines.filter((l) => l.startsWith(':')).map(chainOf);
      for (const d of declared) {
        assert.ok(!committedAt.has(`${c.table}/${d}`), `${d} declared twice`);
        committedAt.set(`${c.table}/${d}`, i);
      }
      // A Service's chains carry its hash suffix' owner in their rules' comments: one transaction.
      for (const l of c.lines.filter((x) => x.startsWith('-A KUBE-SEP-') || x.startsWith('-A KUBE-SVC-'))) {
        const owner = / --comment "?([^" ]+?)(:[^" ]*)?"? /.exec(l)?.[1];
        if (owner === undefined) continue;
        const at = serviceAt.get(owner);
        if (at !== undefined) assert.equal(at, i, `${owner} split over transactions`);
        serviceAt.set(owner, i);
      }
      for (const l of c.lines.filter((x) => x.startsWith('-A '))) {
        const key = `${c.table}/${chainOf(l)}`;
        if (declaredAnywhere.has(key))
          assert.equal(committedAt.get(key), i, `${key}: declared and filled together`);
        const target = / -[jg] (KUBE-\S+)/.exec(l)?.[1];
        if (target !== undefined && declaredAnywhere.has(`${c.table}/${target}`)) {
          assert.ok(
            committedAt.has(`${c.table}/${target}`),
            `${chainOf(l)} jumps to ${target} before it is written`,
          );
        }
      }
    });
    assert.ok(serviceAt.size >= 10, `${serviceAt.size} Services seen`);
  });

  it('flushes and deletes stale chains last, after KUBE-SERVICES no longer jumps to them', () => {
    const chunks = parseChunks(streamed(7).pieces);
    const nat = chunks.filter((c) => c.table === 'nat');
    const last = nat[nat.length - 1]!.lines;
    assert.ok(last.includes(`-X ${STALE}`));
    const servicesAt = nat.findIndex((c) => c.lines.some((l) => l.startsWith(':KUBE-SERVICES ')));
    assert.ok(servicesAt >= 0 && servicesAt < nat.length - 1);
    for (const c of nat.slice(0, -1)) assert.ok(!c.lines.some((l) => l.includes('STALESTALE')));
  });

  it("writes the Services' chains in pieces below V8's large-object size (a transaction may span several)", () => {
    const many = Array.from({ length: 600 }, (_, i) =>
      service(`big/s${String(i).padStart(4, '0')}`, {
        clusterIP: `10.97.${Math.floor(i / 200)}.${(i % 200) + 1}`,
        ports: [
          { port: 80, endpoints: [1, 2, 3, 4, 5].map((e) => ep(`10.245.${e}.${(i % 200) + 1}`, 8080)) },
        ],
      }),
    );
    const pieces = [
      ...renderChunkedRestoreInput(
        { state: state(...many), config: config(), existingServiceChains: new Set() },
        1000,
      ).pieces,
    ];
    const ownChains = pieces.filter((p) => !p.includes(':KUBE-SERVICES '));
    assert.ok(ownChains.join('').length > 500_000, 'the input is large');
    for (const p of ownChains) assert.ok(p.length < 64 * 1024, `a piece of ${p.length} characters`);
    // Transactions still hold up to 1000 chains: fewer COMMITs than pieces.
    assert.ok(ownChains.filter((p) => p.endsWith('COMMIT\n')).length < ownChains.length / 3);
  });

  it('renders a transaction only when asked for it; its result is there once all were taken', () => {
    const r = renderChunkedRestoreInput(request(), 7, EXTRAS);
    const first = r.pieces.next();
    assert.equal(first.done, false);
    assert.match(String(first.value), /^\*nat\n:KUBE-POSTROUTING - \[0:0\]\n:KUBE-MARK-MASQ - \[0:0\]\n/);
    assert.throws(() => r.result(), /before the last piece/);
    for (let p = r.pieces.next(); !p.done; p = r.pieces.next());
    assert.equal(r.result().staleChains.length, 1);
  });
});

describe('streamed chunked full sync input (kernel, private netns)', function () {
  this.timeout(30_000);
  before(function () {
    requireRoot(this);
  });

  it('leaves the kernel exactly as one transaction of the whole render does', async () => {
    const one = mergeExtraLines(renderRestoreInput(request()).restoreInput, EXTRAS);
    const pieces = [...renderChunkedRestoreInput(request(), 5, EXTRAS).pieces];
    // Into the same kernel state: a stale chain referenced by nothing, a foreign rule, and a
    // populated table (the second restore of each kind rewrites what the first wrote).
    const script = `
set -e
prep() { iptables -t nat -N ${STALE}; iptables -t nat -N FOREIGN; iptables -t nat -A FOREIGN -j RETURN; }
prep
iptables-restore --noflush < "$D/one"
iptables -t nat -N ${STALE}
iptables-restore --noflush < "$D/one"
iptables-save | grep -v '^#' > "$D/save-one"
iptables -t nat -F; iptables -t nat -X; iptables -F; iptables -X; iptables -t mangle -X
prep
iptables-restore --noflush < "$D/streamed"
iptables -t nat -N ${STALE}
iptables-restore --noflush < "$D/streamed"
iptables-save | grep -v '^#' > "$D/save-streamed"
`;
    const dir = await mkdtemp(join(tmpdir(), 'svcplane-stream-'));
    try {
      await writeFile(join(dir, 'one'), one);
      await writeFile(join(dir, 'streamed'), pieces.join(''));
      const res = await run(['unshare', '-n', 'bash', '-c', script], { env: { D: dir }, allowFailure: true });
      assert.equal(res.exitCode, 0, res.stderr);
      const saved = await readFile(join(dir, 'save-one'), 'utf8');
      assert.match(saved, /^-A KUBE-SERVICES .*-j KUBE-SVC-/m);
      assert.match(saved, /^-A KUBE-SVC-\S+ .*-j KUBE-SEP-/m);
      assert.doesNotMatch(saved, /STALESTALE/);
      assert.match(saved, /^-A FOREIGN -j RETURN$/m);
      assert.equal(await readFile(join(dir, 'save-streamed'), 'utf8'), saved);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
  it('fills new fixed chains in parts into an empty kernel, whole into a populated one: same kernel as one transaction', async () => {
    const one = mergeExtraLines(renderRestoreInput(request()).restoreInput, EXTRAS);
    const limits = { maxChains: 5, maxRules: 2 };
    // A new node: no chain of ours exists, so KUBE-SERVICES and KUBE-NODEPORTS are filled in parts.
    const fresh = [
      ...renderChunkedRestoreInput(request(), { ...limits, exists: () => false }, EXTRAS).pieces,
    ];
    const appended = fresh.filter((p) => p.includes('\n-A KUBE-SERVICES ') && !p.includes('\n:'));
    assert.ok(appended.length > 2, `${appended.length} transactions append to KUBE-SERVICES`);
    // The second sync sees every chain: each is written whole.
    const again = [...renderChunkedRestoreInput(request(), { ...limits, exists: () => true }, EXTRAS).pieces];
    assert.deepEqual(again, [...renderChunkedRestoreInput(request(), 5, EXTRAS).pieces]);
    const script = `
set -e
iptables -t nat -N FOREIGN; iptables -t nat -A FOREIGN -j RETURN
iptables-restore --noflush < "$D/one"
iptables-save | grep -v '^#' > "$D/save-one"
iptables-restore --noflush < "$D/one"
iptables-save | grep -v '^#' > "$D/save-one-again"
iptables -t nat -F; iptables -t nat -X; iptables -F; iptables -X; iptables -t mangle -X
iptables -t nat -N FOREIGN; iptables -t nat -A FOREIGN -j RETURN
iptables-restore --noflush < "$D/fresh"
iptables-save | grep -v '^#' > "$D/save-fresh"
iptables-restore --noflush < "$D/again"
iptables-save | grep -v '^#' > "$D/save-again"
`;
    const dir = await mkdtemp(join(tmpdir(), 'svcplane-stream-'));
    try {
      await writeFile(join(dir, 'one'), one);
      await writeFile(join(dir, 'fresh'), fresh.join(''));
      await writeFile(join(dir, 'again'), again.join(''));
      const res = await run(['unshare', '-n', 'bash', '-c', script], { env: { D: dir }, allowFailure: true });
      assert.equal(res.exitCode, 0, res.stderr);
      const saved = await readFile(join(dir, 'save-one'), 'utf8');
      assert.match(saved, /^-A KUBE-SERVICES .*-j KUBE-SVC-/m);
      assert.match(saved, /^-A KUBE-NODEPORTS .*-j KUBE-EXT-/m);
      assert.match(saved, /^-A FOREIGN -j RETURN$/m);
      assert.equal(await readFile(join(dir, 'save-fresh'), 'utf8'), saved);
      assert.equal(
        await readFile(join(dir, 'save-again'), 'utf8'),
        await readFile(join(dir, 'save-one-again'), 'utf8'),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
