import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { run, startProcess, type ChildHandle } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { FakeApiServer } from '../support/fake-apiserver.js';
import { requireRoot } from '../support/sandbox.js';

/**
 * The real CLI (`cli()`, what bin/svcplane.js runs, from the current source through tsx) against a
 * Kubernetes API it cannot use: a malformed kubeconfig, and a valid one whose server never answers. Each process runs
 * in a private network namespace of its own (loopback only), so the API address is unreachable and
 * no iptables command touches the machine's tables. What it prints must never contain a credential.
 */

const NODE = 'node-1';
const MAIN = pathToFileURL(join(packageRoot(), 'src', 'cli', 'main.ts')).href;
/** bin/svcplane.js, on the source: `process.exitCode = await cli(process.argv)`. */
const ENTRY = `import(${JSON.stringify(MAIN)}).then(async (m) => { process.exitCode = await m.cli(['node', 'svcplane', ...process.argv.slice(1)]); });`;

/** A credential that must never be printed: unique per run, so a hit cannot be a coincidence. */
const secret = (what: string): string => `${what}-${randomBytes(12).toString('hex')}`;

function kubeconfig(server: string, token: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: c',
    `  cluster: {server: "${server}"}`,
    'users:',
    '- name: proxy',
    `  user: {token: ${token}}`,
    'contexts:',
    '- name: c',
    '  context: {cluster: c, user: proxy}',
    'current-context: c',
    '',
  ].join('\n');
}

async function eventually(what: string, ms: number, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function eventuallyAsync(what: string, ms: number, cond: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('svcplane CLI against an unusable API (real processes, private netns)', function () {
  this.timeout(60_000);
  const NS = `svcp-c${randomBytes(4).toString('hex')}`;
  let nsCreated = false;
  let dir = '';
  let api: FakeApiServer | undefined;
  const children: ChildHandle[] = [];

  before(async function () {
    requireRoot(this);
    await run(['ip', 'netns', 'add', NS]);
    nsCreated = true;
    await run(['ip', 'link', 'set', 'lo', 'up'], { netns: NS });
    dir = mkdtempSync(join(tmpdir(), 'svcplane-cli-api-'));
    // A stand-in that is stopped: its port had an API once and now answers nothing (and from the
    // private netns, 127.0.0.1 is that namespace's own loopback anyway).
    api = await FakeApiServer.create();
    await api.stop();
  });

  after(async () => {
    for (const c of children) await c.stop(2000);
    if (nsCreated) await run(['ip', 'netns', 'del', NS], { allowFailure: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Starts `svcplane ARGS` in the private netns (with `env` added); collects every output line. */
  function svcplane(
    args: readonly string[],
    env: Readonly<Record<string, string>> = {},
  ): { child: ChildHandle; lines: string[] } {
    const vars = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    const child = startProcess(['env', ...vars, process.execPath, '--import=tsx', '-e', ENTRY, ...args], {
      netns: NS,
    });
    children.push(child);
    const lines: string[] = [];
    child.onLine((l) => lines.push(l));
    return { child, lines };
  }

  const daemonFlags = [
    `--hostname-override=${NODE}`,
    '--healthz-bind-address=127.0.0.1:10256',
    '--metrics-bind-address=127.0.0.1:10249',
    '--v=5',
    '--logging-format=json',
  ];

  it('a malformed kubeconfig: exit 1 (as kube-proxy) with the position of the error, without quoting the file', async () => {
    const token = secret('malformed-token');
    const file = join(dir, 'malformed.yaml');
    // Broken YAML right after the token: the parser's own message would quote this line.
    writeFileSync(
      file,
      `apiVersion: v1\nkind: Config\nusers:\n- name: proxy\n  user: {token: ${token}\ncontexts: [}\n`,
    );
    for (const command of ['run', 'sync']) {
      const { child, lines } = svcplane([command, `--kubeconfig=${file}`, ...daemonFlags]);
      assert.equal(await child.exited, 1, `${command}: exit status\n${lines.join('\n')}`);
      const out = lines.join('\n');
      assert.match(out, /cannot load kubeconfig .*malformed\.yaml: invalid YAML: .* at line \d+, column \d+/);
      assert.ok(!out.includes(token), `${command} printed the token:\n${out}`);
    }
  });

  it('a valid kubeconfig, server unreachable: retries are logged, the token and URL password never are', async () => {
    const token = secret('token');
    const password = secret('password');
    const file = join(dir, 'valid.yaml');
    writeFileSync(file, kubeconfig(`http://admin:${password}@127.0.0.1:${api!.port}`, token));
    const { child, lines } = svcplane(['run', `--kubeconfig=${file}`, ...daemonFlags]);
    // Every reflector fails and backs off a few times (verbose logging on).
    await eventually(
      'three failed list attempts logged',
      15_000,
      () => lines.filter((l) => l.includes('watch failed, retrying')).length >= 3,
    );
    await child.stop(5000);
    const out = lines.join('\n');
    assert.match(out, new RegExp(`"server":"http://127\\.0\\.0\\.1:${api!.port}"`), out);
    assert.ok(!out.includes(token), `the token was printed:\n${out}`);
    assert.ok(!out.includes(password), `the URL password was printed:\n${out}`);
    assert.ok(!out.includes('admin:'), `the URL user was printed:\n${out}`);
    // A plain http:// server: the token is not sent at all (client-go's rule), and that is said loudly.
    assert.match(
      out,
      /"level":"warn","message":"INSECURE API URL: .*credentials are NOT sent.*"withheld":"token"/,
    );
  });
  it('an exec credential plugin that fails: its secrets reach neither the logs nor /healthz', async () => {
    const refresh = secret('rt');
    const client = secret('cs');
    const jwt = `eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ${randomBytes(8).toString('hex')}In0.${randomBytes(16).toString('hex')}`;
    const plugin = join(dir, 'failing-plugin.sh');
    // What an OIDC/cloud plugin prints when a refresh fails: the request, secrets included.
    writeFileSync(
      plugin,
      `#!/bin/sh\necho "oauth2: cannot fetch token: POST https://idp.example/token refresh_token=${refresh}&client_secret=${client}" >&2\necho "id_token: ${jwt}" >&2\nexit 1\n`,
    );
    chmodSync(plugin, 0o755);
    const file = join(dir, 'exec.yaml');
    writeFileSync(
      file,
      kubeconfig(`https://127.0.0.1:${api!.port}`, 'unused').replace(
        /user: \{token: unused\}/,
        `user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: ${plugin}, interactiveMode: Never}}`,
      ),
    );
    const { child, lines } = svcplane(['run', `--kubeconfig=${file}`, ...daemonFlags], {
      SVCPLANE_API_HEALTH_GRACE_SECONDS: '1',
    });
    await eventually(
      'three failed attempts logged',
      15_000,
      () => lines.filter((l) => l.includes('watch failed, retrying')).length >= 3,
    );
    const leaks = (text: string): string[] => [refresh, client, jwt].filter((s) => text.includes(s));
    assert.deepEqual(leaks(lines.join('\n')), [], `the plugin's secrets were logged:\n${lines.join('\n')}`);
    assert.ok(
      lines.some((l) => l.includes('credential plugin or auth provider failed')),
      'the failure is logged (without the output)',
    );
    // /healthz turns 503 after the grace period, with a fixed reason.
    let body = '';
    await eventuallyAsync('/healthz names the credential plugin', 15_000, async () => {
      const r = await run(['curl', '-s', '--max-time', '2', 'http://127.0.0.1:10256/healthz'], {
        netns: NS,
        allowFailure: true,
      });
      body = r.stdout;
      return body.includes('credential plugin');
    });
    const h = JSON.parse(body) as { reason?: string; sourceError?: string };
    assert.equal(h.sourceError, 'kubeconfig credential plugin or auth provider failed');
    assert.deepEqual(leaks(body), []);
    await child.stop(5000);
    assert.deepEqual(leaks(lines.join('\n')), []);
  });

  for (const mode of [[], ['--detect-local-mode=NodeCIDR']]) {
    it(`SIGTERM before the API was ever reached: exit 0 within 3 s${mode.length ? ' (NodeCIDR: waiting for the Node)' : ''}`, async () => {
      const file = join(dir, 'unreachable.yaml');
      writeFileSync(file, kubeconfig(`http://127.0.0.1:${api!.port}`, secret('token')));
      const { child, lines } = svcplane(['run', `--kubeconfig=${file}`, ...mode, ...daemonFlags]);
      // Still waiting for the first lists: failures logged, no sync, not running.
      await eventually(
        'list failures logged',
        15_000,
        () => lines.filter((l) => l.includes('watch failed, retrying')).length >= 3,
      );
      assert.ok(!lines.some((l) => l.includes('"svcplane running"')), lines.join('\n'));
      const t0 = Date.now();
      // SIGTERM, then SIGKILL after 10 s: a hang shows as a null status (killed), not as 0.
      const code = await child.stop(10_000);
      const took = Date.now() - t0;
      const out = lines.join('\n');
      assert.equal(code, 0, `exit status after SIGTERM (${took} ms):\n${out.slice(-3000)}`);
      assert.ok(took < 3000, `exited ${took} ms after SIGTERM`);
      assert.ok(
        lines.some((l) => l.includes('stopping; rules stay in place')),
        'the stop is logged',
      );
      assert.ok(!lines.some((l) => l.includes('"synced"')), 'nothing was synced');
    });
  }
});
