import assert from 'node:assert/strict';
import type { Sandbox, Where } from '../../src/netns/sandbox.js';

/**
 * HTTP as a probe in a sandbox namespace sees it (curl there, not this process's network): the
 * daemon's /healthz, /livez, /metrics and health-check node ports, one way for every test.
 */

export interface HttpAnswer {
  readonly code: number;
  readonly body: string;
}

/** GET `url` from `from`: status and body, or undefined when nothing answered within `timeoutS`. */
export async function httpGet(
  sb: Pick<Sandbox, 'exec'>,
  from: Where,
  url: string,
  timeoutS = 2,
): Promise<HttpAnswer | undefined> {
  // -g: an IPv6 literal's brackets are the address, not a URL glob.
  const r = await sb.exec(
    from,
    ['curl', '-s', '-g', '--max-time', String(timeoutS), '-w', '\n%{http_code}', url],
    { allowFailure: true },
  );
  if (r.exitCode !== 0) return undefined;
  const i = r.stdout.lastIndexOf('\n');
  return { code: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i) };
}

/** The /metrics text the node's daemon serves at `address` (kube-proxy's default); fails unless 200. */
export async function scrapeMetrics(
  sb: Pick<Sandbox, 'exec'>,
  address = '127.0.0.1:10249',
  timeoutS = 5,
): Promise<string> {
  const r = await httpGet(sb, 'node', `http://${address}/metrics`, timeoutS);
  assert.equal(r?.code, 200, `GET http://${address}/metrics`);
  return r.body;
}
