import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/util/exec.js';

/**
 * A self-signed serving certificate for test API servers (kube-apiserver always serves TLS), made
 * with the openssl CLI (Node has no X.509 writer). One per process, for 127.0.0.1, ::1, localhost
 * and the sandbox's outside address 192.0.2.2, so a node namespace can reach a stand-in there.
 */
export interface TestCertificate {
  /** PEM certificate; also the CA a client trusts (self-signed). */
  readonly cert: string;
  readonly key: string;
}

let cached: Promise<TestCertificate> | undefined;

export function testCertificate(): Promise<TestCertificate> {
  cached ??= (async () => {
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
        'subjectAltName=IP:127.0.0.1,IP:::1,IP:192.0.2.2,DNS:localhost',
      ]);
      return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  })();
  return cached;
}
