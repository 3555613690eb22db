import type { ProxyOptions } from '../cli/proxy-options.js';
import type { StateSource } from './source.js';

/** Builds the Kubernetes API source from the CLI options (kubeconfig / in-cluster). */
export function createApiSource(_opts: ProxyOptions): Promise<StateSource> {
  return Promise.reject(new Error('the Kubernetes API source is not wired yet: use --manifests PATH'));
}
