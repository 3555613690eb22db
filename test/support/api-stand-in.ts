import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { FakeApiServer } from './fake-apiserver.js';
import { NetnsListener } from './netns-listener.js';

/** The port a sandbox node reaches the API stand-in on (kube-apiserver's). */
export const API_PORT = 6443;

/**
 * The Kubernetes API stand-in where a sandbox node reaches its kube-apiserver: TLS and a bearer token,
 * listening on the outside namespace's address (port 6443), and the kubeconfig a node would have (the
 * API's CA, its address, the token) written into `dir`. The test keeps the FakeApiServer (`api`) to
 * create, change and delete objects, and to see what the daemon asked.
 */
export class ApiStandIn {
  private constructor(
    readonly api: FakeApiServer,
    readonly kubeconfig: string,
    private readonly listener: NetnsListener,
  ) {}

  static async start(
    sb: Sandbox,
    dir: string,
    opts: { readonly token: string; readonly bookmarkIntervalMs?: number },
  ): Promise<ApiStandIn> {
    const listener = NetnsListener.start(sb.outsideNs);
    try {
      const api = await FakeApiServer.create({
        tls: true,
        tokens: [opts.token],
        bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 500,
        host: sb.outsideIPv4,
        listenHandle: () => listener.listen(sb.outsideIPv4, API_PORT),
      });
      const kubeconfig = join(dir, 'kubeconfig');
      writeFileSync(kubeconfig, api.kubeconfigYaml(`{token: ${opts.token}}`));
      return new ApiStandIn(api, kubeconfig, listener);
    } catch (err) {
      await listener.close();
      throw err;
    }
  }

  async stop(): Promise<void> {
    await this.api.stop();
    await this.listener.close();
  }
}
