import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/util/exec.js';

/**
 * A self-signed serving certificate for test API servers (kube-apiserver always serves TLS), made
 * with the openssl CLI (Node has no X.509 writer). One per process and address list, for 127.0.0.1,
 * ::1, localhost and the sandbox's outside address 192.0.2.2, so a node namespace can reach a stand-in
 * there, plus `extraIPs` (e.g. a container's address on a Docker network).
 */
export interface TestCertificate {
  /** PEM certificate; also the CA a client trusts (self-signed). */
  readonly cert: string;
  readonly key: string;
}

const cached = new Map<string, Promise<TestCertificate>>();

export function testCertificate(extraIPs: readonly string[] = []): Promise<TestCertificate> {
  const sans = [
    'IP:127.0.0.1',
    'IP:::1',
    'IP:192.0.2.2',
    ...extraIPs.map((ip) => `IP:${ip}`),
    'DNS:localhost',
  ].join(',');
  let made = cached.get(sans);
  if (made) return made;
  made = (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'svcplane-cert-'));
    try {
      const keyFile = join(dir, 'key.pem');
      const certFile = join(dir, 'cert.pem');
      await run([
        'openssl',
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        keyFile,
        '-out',
        certFile,
        '-days',
        '2',
        '-subj',
        '/CN=svcplane-test-apiserver',
        '-addext',
        `subjectAltName=${sans}`,
      ]);
      return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  })();
  cached.set(sans, made);
  return made;
}
