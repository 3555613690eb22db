import { randomUUID } from 'node:crypto';
import {
  GenericContainer,
  ImageName,
  getContainerRuntimeClient,
  type StartedTestContainer,
} from 'testcontainers';

/**
 * Helpers for the container tests (test/docker). No registry is reachable here, so Ryuk (the
 * testcontainers reaper, an image to pull) is off and every container and network is removed by
 * `DockerScope.close()`; all carry the label org.testcontainers=true and a per-run label so a
 * leftover can be found by hand: `docker ps -a --filter label=svcplane.test.run`.
 */

process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';
process.env.TESTCONTAINERS_HOST_OVERRIDE ??= 'localhost';

/** The image under test; scripts/test-docker.sh builds it. */
export const IMAGE = process.env.SVCPLANE_IMAGE ?? 'svcplane:test';

const RUN_LABEL = 'svcplane.test.run';

/** Why the Docker tests cannot run here (no engine, no image), or undefined when they can. */
export async function dockerUnavailable(image = IMAGE): Promise<string | undefined> {
  let client;
  try {
    client = await getContainerRuntimeClient();
  } catch (err) {
    return `no Docker engine: ${err instanceof Error ? err.message : String(err)}`;
  }
  try {
    if (!(await client.image.exists(ImageName.fromString(image)))) {
      return `image ${image} missing (build it with scripts/test-docker.sh)`;
    }
  } catch (err) {
    return `Docker engine does not answer: ${err instanceof Error ? err.message : String(err)}`;
  }
  return undefined;
}

export interface ExecOutcome {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * GenericContainer plus namespaced sysctls set by the engine at creation (`docker run --sysctl`) and a
 * read-only root filesystem (`docker run --read-only`).
 */
export class NodeContainer extends GenericContainer {
  withSysctls(sysctls: Record<string, string>): this {
    this.hostConfig.Sysctls = { ...this.hostConfig.Sysctls, ...sysctls };
    return this;
  }

  withReadOnlyRootFilesystem(): this {
    this.hostConfig.ReadonlyRootfs = true;
    return this;
  }
}

/** Owns the containers and networks of one test file and removes them all, also after failures. */
export class DockerScope {
  readonly runId = randomUUID().slice(0, 8);
  private readonly containers: StartedTestContainer[] = [];
  private readonly networks: string[] = [];

  labels(): Record<string, string> {
    return { 'org.testcontainers': 'true', [RUN_LABEL]: this.runId };
  }

  /**
   * A bridge network of our own, `--internal` so nothing on it has a way out of the machine
   * (the engine runs without NAT anyway; see scripts/docker-setup.sh). The engine picks the subnet:
   * it avoids the host's own routes (a fixed one could take the host's gateway address).
   */
  async network(suffix: string): Promise<string> {
    const client = await getContainerRuntimeClient();
    const name = `svcplane-test-${this.runId}-${suffix}`;
    await client.network.create({
      Name: name,
      Driver: 'bridge',
      Internal: true,
      CheckDuplicate: true,
      Labels: this.labels(),
    });
    this.networks.push(name);
    return name;
  }

  /** Starts a container from `image`; `configure` adds what the test needs (command, caps, files). */
  async start(
    name: string,
    configure: (c: NodeContainer) => GenericContainer,
    image = IMAGE,
  ): Promise<StartedTestContainer> {
    const container = configure(
      new NodeContainer(image)
        .withName(`svcplane-test-${this.runId}-${name}`)
        .withLabels(this.labels())
        .withStartupTimeout(30_000),
    );
    const started = await container.start();
    this.containers.push(started);
    return started;
  }

  /** Removes every container and network this scope created; collects errors instead of stopping. */
  async close(): Promise<void> {
    const errors: string[] = [];
    for (const c of this.containers.splice(0).reverse()) {
      try {
        await c.stop({ remove: true, removeVolumes: true, timeout: 0 });
      } catch (err) {
        errors.push(`container ${c.getName()}: ${String(err)}`);
      }
    }
    if (this.networks.length) {
      const client = await getContainerRuntimeClient();
      for (const name of this.networks.splice(0)) {
        try {
          await client.network.remove(client.network.getById(name));
        } catch (err) {
          errors.push(`network ${name}: ${String(err)}`);
        }
      }
    }
    if (errors.length) throw new Error(`docker cleanup failed: ${errors.join('; ')}`);
  }
}

/** Runs `argv` in the container; never throws for a non-zero exit (callers assert on it). */
export async function run(
  container: StartedTestContainer,
  argv: string[],
  env: Record<string, string> = {},
): Promise<ExecOutcome> {
  const r = await container.exec(argv, { env });
  return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
}

/** Like `run` but fails with the command's output when it exits non-zero. */
export async function runOk(
  container: StartedTestContainer,
  argv: string[],
  env: Record<string, string> = {},
): Promise<string> {
  const r = await run(container, argv, env);
  if (r.exitCode !== 0) {
    throw new Error(
      `${argv.join(' ')} exited ${r.exitCode} in ${container.getName()}\n${r.stdout}${r.stderr}`,
    );
  }
  return r.stdout;
}
