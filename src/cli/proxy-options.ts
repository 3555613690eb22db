import { parseCommandLine, FlagError, type ParsedCommandLine } from '../config/command-line.js';
import { PROXY_FLAGS, type FlagSpec } from '../config/flags.js';
import { loadKubeProxyConfigFile } from '../config/kube-proxy-config.js';
import { resolveConfiguration, type Notice, type ResolvedConfiguration } from '../config/options.js';
import { resolveSchedulerFlags } from '../ipvs/types.js';
import { log } from '../util/log.js';

/**
 * The command line of the daemon form (`svcplane [flags]`, `svcplane run [flags]`) and of the
 * commands that render what it would (`sync`, `diff`, `explain`): argv → flags → `--config` file →
 * one resolved configuration (config/options.ts), with kube-proxy's precedence.
 */

/** The one-shot actions of kube-proxy's command line: only the daemon form has them. */
const DAEMON_ONLY = new Set(['cleanup', 'write-config-to', 'init-only']);

/** Flags of `sync`, `diff` and `explain`: the daemon's minus its one-shot actions. */
export const RENDER_FLAGS: readonly FlagSpec[] = PROXY_FLAGS.filter((s) => !DAEMON_ONLY.has(s.name));

export interface LoadedConfiguration extends ResolvedConfiguration {
  readonly flags: ParsedCommandLine;
}

/**
 * Parses `args` against `specs`, reads the `--config` file when given and resolves everything.
 * Throws FlagError / ConfigError / Error naming the flag or field and the reason.
 */
export async function loadConfiguration(
  args: readonly string[],
  specs: readonly FlagSpec[],
  opts: { readonly positionals?: number } = {},
): Promise<LoadedConfiguration> {
  const flags = parseCommandLine(args, specs);
  const allowed = opts.positionals ?? 0;
  const extra = flags.positionals.filter((p) => p !== '');
  if (extra.length > allowed) {
    throw new FlagError(
      JSON.stringify(extra[allowed]),
      'unexpected argument (flags take the form --name=value; a boolean is --name or --name=false)',
    );
  }
  const path = typeof flags.values.config === 'string' ? flags.values.config : '';
  const file = path !== '' ? { path, parsed: await loadKubeProxyConfigFile(path) } : undefined;
  const resolved = resolveConfiguration({ flags, specs, ...(file ? { file } : {}) });
  const { ipvs } = resolved.options;
  if (ipvs.schedulerFlags !== undefined) {
    try {
      resolveSchedulerFlags(ipvs.scheduler, ipvs.schedulerFlags);
    } catch (err) {
      throw new FlagError('--ipvs-scheduler-flags', err instanceof Error ? err.message : String(err));
    }
  }
  return { ...resolved, flags };
}

/** One warning per notice, each said once (kube-proxy names an ignored flag the same way). */
export function logNotices(notices: readonly Notice[]): void {
  const seen = new Set<string>();
  for (const n of notices) {
    const key = `${n.subject}\0${n.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    log.warn(`${n.subject}: ${n.message}`);
  }
}
