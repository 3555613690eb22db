import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Context } from 'mocha';
import type { EchoReply, ProbeResult, RequestSpec } from '../../src/netns/protocol.js';
import { Sandbox, type CreateOptions } from '../../src/netns/sandbox.js';
import { skipBecause } from './skip.js';

/**
 * Helpers for traffic tests on a netns sandbox (src/netns/sandbox.ts).
 *
 *   const env = useSandbox({ pods: [{ name: 'a', tcpPorts: [80] }, { name: 'b', tcpPorts: [80] }] });
 *   it('...', async () => { expectReply(await env.sb.request('a', {...}), 'b'); });
 */

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Skips the current suite/test unless running as root (namespaces need it): a failure unless asked for. */
export function requireRoot(ctx: Context): void {
  if (!isRoot()) skipBecause(ctx, 'needs root (network namespaces)');
}

/** A fresh sandbox id: `t` + 7 random [a-z0-9] characters, unique across concurrent runs. */
export function randomSandboxId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return `t${[...randomBytes(7)].map((b) => alphabet[b % alphabet.length]).join('')}`;
}

/**
 * Creates a sandbox in a `before` hook of the enclosing suite and destroys it in `after` (also when
 * tests fail). Skips the suite when not root.
 */
export function useSandbox(opts: Omit<CreateOptions, 'id'> & { id?: string } = {}): { readonly sb: Sandbox } {
  let sandbox: Sandbox | undefined;
  before(async function () {
    requireRoot(this);
    this.timeout(60_000);
    sandbox = await Sandbox.create({ ...opts, id: opts.id ?? randomSandboxId() });
  });
  after(async function () {
    this.timeout(60_000);
    await sandbox?.destroy();
  });
  return {
    get sb(): Sandbox {
      if (!sandbox) throw new Error('sandbox not created (before hook failed or was skipped)');
      return sandbox;
    },
  };
}

/** Asserts that a probe succeeded (and, if given, that `pod` answered); returns the reply. */
export function expectReply(r: ProbeResult, pod?: string): EchoReply {
  if (!r.ok) assert.fail(`expected a reply${pod ? ` from ${pod}` : ''}, got ${r.error}: ${r.detail}`);
  if (pod !== undefined) assert.equal(r.reply.pod, pod, `answered by ${r.reply.pod}, expected ${pod}`);
  return r.reply;
}

/** Asserts that a probe failed with `error`. */
export function expectError(r: ProbeResult, error: Extract<ProbeResult, { ok: false }>['error']): void {
  if (r.ok) assert.fail(`expected ${error}, got a reply from ${r.reply.pod} (${r.reply.ip}:${r.reply.port})`);
  assert.equal(r.error, error, `expected ${error}, got ${r.error}: ${r.detail}`);
}

/** A TCP request to `ip:port` for `Sandbox.request` (its default timeout unless `timeoutMs`). */
export const tcp = (ip: string, port: number, timeoutMs?: number): RequestSpec => ({
  proto: 'tcp',
  ip,
  port,
  ...(timeoutMs !== undefined ? { timeoutMs } : {}),
});

/** Requests in a loop until stopped (see backgroundTraffic). */
export interface BackgroundTraffic {
  /** Every result so far, in order; grows while the loop runs. */
  readonly results: readonly ProbeResult[];
  /** Ends the loop after the request in flight; resolves with every result. */
  stop(): Promise<ProbeResult[]>;
}

/** Requests from `from`, 20 ms apart, until stopped: proves traffic keeps flowing while things change. */
export function backgroundTraffic(sb: Sandbox, from: string, req: RequestSpec): BackgroundTraffic {
  const results: ProbeResult[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      results.push(await sb.request(from, req));
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    results,
    stop: async () => {
      running = false;
      await loop;
      return results;
    },
  };
}

/** Asserts that background traffic ran (5 requests at least) and every request was answered; returns who answered. */
export function assertAllAnswered(results: readonly ProbeResult[], what: string): Set<string> {
  assert.ok(results.length >= 5, `${what}: only ${results.length} probes ran`);
  const failed = results.filter((r) => !r.ok);
  assert.equal(
    failed.length,
    0,
    `${what}: ${failed.length}/${results.length} failed: ${JSON.stringify(failed[0])}`,
  );
  return new Set(results.map((r) => (r.ok ? r.reply.pod : '')));
}
