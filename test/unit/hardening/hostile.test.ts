import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { renderRestoreInput } from '../../../src/iptables/render.js';
import { parseManifestText } from '../../../src/kube/manifests.js';
import { buildClusterState, type SourceObject } from '../../../src/model/build.js';
import { parseIP } from '../../../src/model/ip.js';
import type { ClusterState } from '../../../src/model/types.js';
import { run } from '../../../src/util/exec.js';
import { withPropertySeed } from '../../support/property.js';
import { requireRoot } from '../../support/sandbox.js';
import { config, config6 } from '../iptables/fixtures.js';

/**
 * Hostile and broken input (test/fixtures/hostile, plus generated giants) and a property test over
 * random raw objects: building never throws, problems are clear, a good Service always survives,
 * the rendered rules pass the real iptables-restore (in a private netns, never the machine's own
 * tables; skipped visibly when not root), never carry text from input that failed validation
 * (marked `ZZBAD`), and every IP address, CIDR and port in them comes from the validated state or
 * the fixed configuration.
 */

const DIR = join(dirname(fileURLToPath(import.meta.url)), '../../fixtures/hostile');
const MARK = 'ZZBAD';
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

const GOOD: SourceObject[] = [
  {
    source: 'good',
    obj: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'good', namespace: 'default' },
      spec: { clusterIP: '10.96.9.9', ports: [{ port: 80, protocol: 'UDP' }] },
    },
  },
  {
    source: 'good-slice',
    obj: {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'good-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'good' } },
      addressType: 'IPv4',
      ports: [{ name: '', protocol: 'UDP', port: 53 }],
      endpoints: [{ addresses: ['10.244.0.30'], conditions: { ready: true } }],
    },
  },
];

function renderBoth(state: ClusterState): string[] {
  return [config(), config6()].map(
    (cfg) => renderRestoreInput({ state, config: cfg, existingServiceChains: new Set() }).restoreInput,
  );
}

/** A private netns for the whole file (creating one per restore costs ~0.4 s here). */
const NS = `svcp-h${randomBytes(4).toString('hex')}`;
let nsReady: Promise<void> | undefined;

before(function () {
  if (isRoot) nsReady = run(['ip', 'netns', 'add', NS]).then(() => undefined);
});

after(async () => {
  if (nsReady) await run(['ip', 'netns', 'del', NS], { allowFailure: true });
});

/**
 * Real kernel check in the private netns: `--test`, then a real apply (catches missing jump targets).
 * Needs root: callers call requireRoot(this) first (a skip that fails unless asked for); it never passes unchecked.
 */
async function restoreOK(family: 'IPv4' | 'IPv6', inputs: readonly string[]): Promise<void> {
  assert.ok(isRoot && nsReady, 'restoreOK needs root (the test should have been skipped)');
  assert.ok(inputs.length > 0, 'nothing to check');
  await nsReady;
  const bin = family === 'IPv4' ? 'iptables-restore' : 'ip6tables-restore';
  const input = inputs.join('');
  for (const mode of [['--test'], []]) {
    const r = await run([bin, '--noflush', ...mode], { input, netns: NS, allowFailure: true });
    assert.equal(r.exitCode, 0, `${bin} ${mode.join(' ')}: ${r.stderr}\n${input.slice(0, 2000)}`);
  }
}

// ---- addresses and ports in rendered rules ----

/** Dotted quads (optionally /len) not inside a longer run of digits and dots. */
const IPV4_TOKEN = /(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?:\/\d{1,3})?(?![\d.])/g;
/** Hex-and-colon runs with at least two colons (IPv6, optionally /len), bracketed or bare. */
const IPV6_TOKEN = /(?<![0-9A-Za-z:.])(?=[0-9a-f.]*:[0-9a-f.]*:)[0-9a-f:.]+(?:\/\d{1,3})?(?![0-9A-Za-z:.])/g;
/** Port-valued options (single ports, ranges and lists). */
const PORT_OPTION = /--(?:dport|sport|dports|sports|to-ports) (\S+)/g;
/** `IP:port` and `[IPv6]:port` (DNAT targets, endpoint comments). */
const HOST_PORT = /(?:(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]+\]):(\d+)/g;

/** Canonical `ip` or `ip/len` (the address canonical, the length as written; /32 and /128 dropped). */
function canonicalAddress(token: string): string | undefined {
  const slash = token.indexOf('/');
  const ip = parseIP(slash < 0 ? token : token.slice(0, slash));
  if (!ip) return undefined;
  if (slash < 0) return ip.ip;
  const len = Number(token.slice(slash + 1));
  return len === (ip.family === 'IPv4' ? 32 : 128) ? ip.ip : `${ip.ip}/${len}`;
}

/** Every IP address or CIDR and every port that appears anywhere in restore input (comments too). */
export function addressesAndPorts(input: string): { ips: Set<string>; ports: Set<number> } {
  const ips = new Set<string>();
  const ports = new Set<number>();
  for (const re of [IPV4_TOKEN, IPV6_TOKEN]) {
    for (const m of input.matchAll(re)) {
      const c = canonicalAddress(m[0]);
      if (c !== undefined) ips.add(c);
    }
  }
  for (const m of input.matchAll(PORT_OPTION)) for (const p of m[1]!.split(/[,:]/)) ports.add(Number(p));
  for (const m of input.matchAll(HOST_PORT)) ports.add(Number(m[1]));
  return { ips, ports };
}

/** Every string in a configuration object (at any depth) that is an address or a CIDR. */
function configAddresses(value: unknown, out: Set<string>): Set<string> {
  if (typeof value === 'string') {
    const c = canonicalAddress(value);
    if (c !== undefined) out.add(c);
  } else if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) configAddresses(v, out);
  }
  return out;
}

const EMPTY: ClusterState = { services: new Map(), nodes: new Map(), problems: [] };
/**
 * What the fixed configuration brings: the render configurations' own addresses (node IPs, the
 * local-traffic CIDR, NodePort addresses) and whatever the fixed chains hold (localhost ranges).
 */
const FIXED = ((): { ips: Set<string>; ports: Set<number> } => {
  const fixed = addressesAndPorts(renderBoth(EMPTY).join(''));
  for (const cfg of [config(), config6()]) configAddresses(cfg, fixed.ips);
  return fixed;
})();

/** Addresses and ports the validated state may put into rules. */
function allowedBy(state: ClusterState): { ips: Set<string>; ports: Set<number> } {
  const ips = new Set(FIXED.ips);
  const ports = new Set(FIXED.ports);
  const add = (a: string): void => {
    const c = canonicalAddress(a);
    if (c !== undefined) ips.add(c);
  };
  for (const svc of state.services.values()) {
    [...svc.clusterIPs, ...svc.externalIPs, ...svc.loadBalancerSourceRanges].forEach(add);
    for (const lb of svc.loadBalancerIngress) add(lb.ip);
    ports.add(svc.healthCheckNodePort);
    for (const sp of svc.ports) {
      ports.add(sp.port).add(sp.nodePort);
      for (const e of sp.endpoints) {
        add(e.ip);
        ports.add(e.port);
      }
    }
  }
  for (const node of state.nodes.values()) node.addresses.forEach(add);
  return { ips, ports };
}

/** Every address and port in `inputs` belongs to `state` (or the fixed configuration). */
function checkAddresses(state: ClusterState, inputs: readonly string[]): void {
  const allowed = allowedBy(state);
  for (const input of inputs) {
    const found = addressesAndPorts(input);
    const ips = [...found.ips].filter((ip) => !allowed.ips.has(ip));
    const ports = [...found.ports].filter((p) => !allowed.ports.has(p));
    assert.deepEqual(ips, [], `addresses not from the validated state:\n${input.slice(0, 3000)}`);
    assert.deepEqual(ports, [], `ports not from the validated state:\n${input.slice(0, 3000)}`);
  }
}

function checkGood(state: ClusterState, inputs: readonly string[]): void {
  const good = state.services.get('default/good');
  assert.ok(good, 'the good Service survives');
  assert.equal(good.ports[0]?.endpoints.length, 1);
  assert.match(
    inputs[0]!,
    /-A KUBE-SERVICES -m comment --comment "default\/good cluster IP" .*-d 10\.96\.9\.9 --dport 80 /,
  );
  for (const input of inputs) assert.ok(!input.includes(MARK), `hostile text leaked:\n${input}`);
  checkAddresses(state, inputs);
  for (const p of state.problems) {
    assert.ok(p.reason.length > 0 && !p.reason.includes('\n'), `one-line reason: ${p.reason}`);
    assert.ok(p.reason.length < 2000, `bounded reason (${p.reason.length} chars)`);
  }
}

describe('hardening: hostile input corpus', function () {
  this.timeout(60_000);
  const files = readdirSync(DIR)
    .filter((f) => /\.(ya?ml|json)$/.test(f))
    .sort();
  const v4: string[] = [];
  const v6: string[] = [];

  it('has the corpus', () => assert.ok(files.length >= 15, `${files.length} files`));

  for (const file of files) {
    it(file, () => {
      const text = readFileSync(join(DIR, file), 'utf8');
      const parsed = parseManifestText(text, file, file.endsWith('.json'));
      assert.ok('objects' in parsed, JSON.stringify(parsed));
      const state = buildClusterState([...GOOD, ...parsed.objects]);
      for (const m of text.matchAll(/^# expect: (\S+) (\S+)$/gm)) {
        assert.ok(
          state.problems.some((p) => p.object.kind === m[1] && p.field === m[2]),
          `expected a problem ${m[1]} ${m[2]}: ${JSON.stringify(state.problems).slice(0, 1500)}`,
        );
      }
      for (const m of text.matchAll(/^# absent: (\S+)$/gm))
        assert.equal(state.services.has(m[1]!), false, m[1]);
      for (const m of text.matchAll(/^# endpoints: (\S+) (\d+)$/gm)) {
        assert.equal(state.services.get(m[1]!)?.ports[0]?.endpoints.length, Number(m[2]), m[1]);
      }
      if (file.endsWith('.json')) assert.ok(state.problems.length > 0);
      const inputs = renderBoth(state);
      checkGood(state, inputs);
      v4.push(inputs[0]!);
      v6.push(inputs[1]!);
    });
  }

  it('generated giants: 10 MB strings, 100k ports, 50-deep Lists, 20k duplicate endpoints', () => {
    const huge = `a${'b'.repeat(10 * 1024 * 1024)}${MARK}`;
    const objs: SourceObject[] = [
      { obj: { apiVersion: 'v1', kind: 'Service', metadata: { name: huge, namespace: 'h' }, spec: {} } },
      {
        obj: {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: 'big-annotation', namespace: 'h', annotations: { x: huge } },
          spec: { clusterIP: '10.96.60.1', ports: [{ port: 80 }] },
        },
      },
      {
        obj: {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: 'many-ports', namespace: 'h' },
          spec: {
            clusterIP: '10.96.60.2',
            ports: Array.from({ length: 100_000 }, (_, i) => ({ name: `p${i}`, port: (i % 65536) + 1 })),
          },
        },
      },
      {
        obj: {
          apiVersion: 'discovery.k8s.io/v1',
          kind: 'EndpointSlice',
          metadata: {
            name: 'dups',
            namespace: 'h',
            labels: { 'kubernetes.io/service-name': 'big-annotation' },
          },
          addressType: 'IPv4',
          ports: [{ name: '', protocol: 'TCP', port: 80 }],
          endpoints: Array.from({ length: 20_000 }, () => ({ addresses: ['10.244.0.61'] })),
        },
      },
    ];
    let nested: unknown = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'deep', namespace: 'h' } };
    for (let i = 0; i < 50; i++) nested = { apiVersion: 'v1', kind: 'List', items: [nested] };
    objs.push({ obj: nested });
    const started = performance.now();
    const state = buildClusterState([...GOOD, ...objs]);
    const inputs = renderBoth(state);
    const ms = performance.now() - started;
    assert.ok(ms < 20_000, `took ${Math.round(ms)} ms`);
    assert.ok(
      state.problems.some((p) => p.field === 'metadata.name'),
      'the 10 MB name is rejected',
    );
    assert.ok(
      state.problems.some((p) => /nested deeper/.test(p.reason)),
      'deep Lists are cut',
    );
    assert.equal(
      state.services.get('h/big-annotation')?.ports[0]?.endpoints.length,
      1,
      'duplicates collapse',
    );
    assert.equal(state.services.has('h/deep'), false);
    checkGood(state, inputs);
    for (const p of state.problems)
      assert.ok(!p.object.name.includes('b'.repeat(1000)), 'names in problems are cut');
    // The 100k-port Service either renders (duplicate ports are problems) or is skipped: never a crash.
    v4.push(inputs[0]!);
    v6.push(inputs[1]!);
  });

  it('every rendered corpus case passes the real iptables-restore (one batch per family)', async function () {
    requireRoot(this);
    assert.ok(v4.length > 0);
    await restoreOK('IPv4', v4);
    await restoreOK('IPv6', v6);
  });
});

/**
 * Many restore inputs as one transaction per table: each COMMIT costs ~10 ms with the nf_tables
 * backend, one big section ~30 ms. Re-declaring a chain flushes it, which could hide a jump to a
 * missing chain only when two cases share a service chain name; the corpus above checks case by case.
 */
function mergeTables(inputs: readonly string[]): string {
  const byTable = new Map<string, string[]>();
  for (const input of inputs) {
    let table = '';
    for (const line of input.split('\n')) {
      if (line.startsWith('*')) table = line.slice(1);
      else if (line !== 'COMMIT' && line !== '' && table !== '') {
        const lines = byTable.get(table) ?? [];
        lines.push(line);
        byTable.set(table, lines);
      }
    }
  }
  return [...byTable].map(([t, lines]) => `*${t}\n${lines.join('\n')}\nCOMMIT\n`).join('');
}

// ---- property test: random raw objects, valid and invalid ----

const label = fc.stringMatching(/^[a-z]([a-z0-9-]{0,6}[a-z0-9])?$/);
const hostile = fc.constantFrom(
  `x" -j ACCEPT ${MARK}`,
  `${MARK}\n-A INPUT -j ACCEPT`,
  `1.2.3.4 ${MARK}`,
  `${MARK}`,
  `'; rm -rf / ${MARK}`,
  `$(${MARK})`,
  `10.0.0.1/8${MARK}`,
  `::ffff:${MARK}`,
);
const v4 = fc
  .tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 254 }))
  .map(([a, b]) => `10.96.${a}.${b}`);
const v6 = fc.integer({ min: 1, max: 0xffff }).map((n) => `fd00:96::${n.toString(16)}`);
const epV4 = fc.integer({ min: 2, max: 254 }).map((n) => `10.244.0.${n}`);
const junkIP = fc.oneof(hostile, fc.constantFrom('1.2.3.256', '::ffff:10.0.0.1', '010.1.1.1', ''));
const badPort = fc.constantFrom<unknown>(0, 65536, -1, 1.5, `80${MARK}`, null, '80');

/** Raw Services with their slices; with `bad`, any field may be hostile or broken. */
function rawServiceArb(bad: boolean) {
  const mix = <T, U>(good: fc.Arbitrary<T>, broken: fc.Arbitrary<U>): fc.Arbitrary<T | U> =>
    bad ? fc.oneof({ weight: 3, arbitrary: good }, { weight: 1, arbitrary: broken }) : good;
  const ip = mix(fc.oneof(v4, v6), junkIP);
  const port = mix(fc.integer({ min: 1, max: 65535 }), badPort);
  const name = mix(label, hostile);
  return fc.record({
    name,
    ns: mix(fc.constant('p'), hostile),
    type: mix(fc.constantFrom<unknown>('ClusterIP', 'NodePort', 'LoadBalancer'), fc.constant(`Weird${MARK}`)),
    clusterIP: ip,
    externalIPs: fc.array(
      mix(
        fc.oneof(v4, v6).map((x) => x.replace('10.96.', '203.0.')),
        junkIP,
      ),
      { maxLength: 2 },
    ),
    lb: fc.array(
      mix(
        v4.map((x) => x.replace('10.96.', '198.51.')),
        junkIP,
      ),
      { maxLength: 2 },
    ),
    ranges: fc.array(mix(fc.constantFrom('192.168.0.0/24', 'fd00::/64'), hostile), { maxLength: 2 }),
    eTP: mix(fc.constantFrom<unknown>('Cluster', 'Local'), fc.constant(`x${MARK}`)),
    ports: fc.array(
      fc.record({
        name: mix(label, hostile),
        port,
        protocol: mix(
          fc.constantFrom<unknown>('TCP', 'UDP', 'SCTP'),
          fc.constantFrom<unknown>('tcp', `ICMP${MARK}`, 6),
        ),
        nodePort: fc.oneof(fc.constant(undefined), mix(fc.integer({ min: 30000, max: 32767 }), badPort)),
      }),
      { minLength: 1, maxLength: 3 },
    ),
    endpoints: fc.array(
      fc.record({
        ip: mix(epV4, junkIP),
        node: mix(label, hostile),
        ready: mix(fc.boolean(), fc.constant(`yes${MARK}`)),
      }),
      { maxLength: 4 },
    ),
    slicePort: port,
  });
}

const rawService = rawServiceArb(true);
type RawService = typeof rawService extends fc.Arbitrary<infer T> ? T : never;

function objectsOf(r: RawService, i: number): SourceObject[] {
  const svcName = typeof r.name === 'string' && !r.name.includes(MARK) ? `${r.name}-${i}` : r.name;
  const ports = r.ports.map((p, j) => ({
    name: typeof p.name === 'string' && !p.name.includes(MARK) ? `${p.name}${j}` : p.name,
    port: p.port,
    protocol: p.protocol,
    ...(p.nodePort !== undefined && r.type !== 'ClusterIP' ? { nodePort: p.nodePort } : {}),
  }));
  const first = ports[0]!;
  return [
    {
      source: `svc${i}`,
      obj: {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: svcName, namespace: r.ns },
        spec: {
          type: r.type,
          clusterIP: r.clusterIP,
          externalIPs: r.externalIPs,
          loadBalancerSourceRanges: r.ranges,
          externalTrafficPolicy: r.eTP,
          ports,
        },
        status: { loadBalancer: { ingress: r.lb.map((x) => ({ ip: x })) } },
      },
    },
    {
      source: `slice${i}`,
      obj: {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: `s-${i}`, namespace: r.ns, labels: { 'kubernetes.io/service-name': svcName } },
        addressType: 'IPv4',
        ports: [{ name: first.name, protocol: first.protocol, port: r.slicePort }],
        endpoints: r.endpoints.map((e) => ({
          addresses: [e.ip],
          nodeName: e.node,
          conditions: { ready: e.ready },
        })),
      },
    },
  ];
}

describe('hardening: property — random states always render to rules the kernel accepts', function () {
  this.timeout(120_000);
  /** Restore inputs of the 200 states, merged 50 at a time, for the kernel check below. */
  const batches: { v4: string; v6: string }[] = [];

  it('200 random states: no crash, no leaked text or address or port, rejected Services absent', () =>
    withPropertySeed('random states', (seed) => {
      const cases = fc.sample(
        fc.oneof(
          fc.array(rawServiceArb(false), { minLength: 1, maxLength: 6 }),
          fc.array(rawService, { minLength: 1, maxLength: 6 }),
        ),
        { numRuns: 200, seed },
      );
      let batch4: string[] = [];
      let batch6: string[] = [];
      let rendered = 0;
      let withProblems = 0;
      let addresses = 0;
      for (const raws of cases) {
        const objects = [...GOOD, ...raws.flatMap((r, i) => objectsOf(r, i))];
        const state = buildClusterState(objects);
        if (state.problems.length > 0) withProblems++;
        const inputs = renderBoth(state);
        checkGood(state, inputs);
        addresses += addressesAndPorts(inputs.join('')).ips.size;
        // A Service that was rejected leaves no trace in the rules.
        raws.forEach((r, i) => {
          if (typeof r.name !== 'string' || r.name.includes(MARK) || r.ns.includes(MARK)) return;
          const key = `${r.ns}/${r.name}-${i}`;
          if (state.services.has(key)) return;
          for (const input of inputs)
            assert.ok(!new RegExp(`[" ]${key}[:" ]`).test(input), `${key} rejected but rendered`);
        });
        batch4.push(inputs[0]!);
        batch6.push(inputs[1]!);
        rendered++;
        if (batch4.length >= 50) {
          batches.push({ v4: mergeTables(batch4), v6: mergeTables(batch6) });
          batch4 = [];
          batch6 = [];
        }
      }
      if (batch4.length > 0) batches.push({ v4: mergeTables(batch4), v6: mergeTables(batch6) });
      assert.equal(rendered, 200);
      assert.ok(withProblems > 50 && withProblems < 200, `${withProblems} of 200 states had problems`);
      assert.ok(addresses > 1000, `the check saw ${addresses} addresses`);
    }));

  it('… and the real iptables-restore accepts every one of them (private netns)', async function () {
    requireRoot(this);
    assert.ok(batches.length >= 4, 'the property test ran first');
    for (const b of batches) {
      await restoreOK('IPv4', [b.v4]);
      await restoreOK('IPv6', [b.v6]);
    }
  });

  it('the address check itself catches a foreign IP, CIDR or port', () => {
    const state = buildClusterState(GOOD);
    const inputs = renderBoth(state);
    checkAddresses(state, inputs);
    const with_ = (rule: string): string[] => [inputs[0]!.replace('COMMIT\n', `${rule}\nCOMMIT\n`)];
    assert.throws(() => checkAddresses(state, with_('-A KUBE-SERVICES -d 192.0.2.99 -j DROP')), /addresses/);
    assert.throws(() => checkAddresses(state, with_('-A KUBE-SERVICES -s 10.0.0.0/9 -j DROP')), /addresses/);
    assert.throws(
      () =>
        checkAddresses(state, with_('-A KUBE-SERVICES -m comment --comment "x -> [fd00::99]:53" -j DROP')),
      /addresses/,
    );
    assert.throws(
      () => checkAddresses(state, with_('-A KUBE-SERVICES -p udp --dport 5353 -j DROP')),
      /ports/,
    );
    assert.throws(
      () => checkAddresses(state, with_('-A KUBE-SEP-X -j DNAT --to-destination 10.244.0.30:54')),
      /ports/,
    );
  });
});
