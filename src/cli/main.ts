import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { redactText } from '../util/log.js';
import { packageRoot } from '../util/paths.js';
import { registerProxyCommands } from './proxy.js';
import { registerNetnsCommands } from './netns.js';
import { registerDiffCommand } from './diff.js';
import { registerTraceCommand } from './trace.js';
import { registerExplainCommand } from './explain.js';
import { registerDemoCommand } from './demo.js';

/**
 * svcplane's command line. Each subcommand lives in its own module and registers itself here.
 * Flags follow kube-proxy's names wherever kube-proxy has one.
 */

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

export function buildProgram(): Command {
  const program = new Command('svcplane')
    .description('Kubernetes Service dataplane controller (iptables / IPVS), kube-proxy compatible')
    .version(packageVersion())
    .showHelpAfterError();
  // Subcommand modules register here (one line each).
  registerProxyCommands(program);
  registerDemoCommand(program);
  registerNetnsCommands(program);
  registerDiffCommand(program);
  registerTraceCommand(program);
  registerExplainCommand(program);
  return program;
}

/** Runs the CLI; resolves to the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await program.parseAsync([...argv]);
  } catch (err) {
    const code = (err as { exitCode?: number }).exitCode;
    if (typeof code === 'number') return code;
    throw err;
  }
  return typeof process.exitCode === 'number' ? process.exitCode : 0;
}

/**
 * What `bin/svcplane.js` runs: the CLI, with an error that escapes a command printed as one line
 * on stderr (exit status 2). Messages are built not to carry credentials (see kube/kubeconfig.ts).
 */
export async function cli(argv: readonly string[]): Promise<number> {
  try {
    return await main(argv);
  } catch (err) {
    // Redacted by content too: defence in depth for a message that quotes a server or a plugin.
    process.stderr.write(`${redactText(err instanceof Error ? err.message : String(err))}\n`);
    return 2;
  }
}
