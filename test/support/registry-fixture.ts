/**
 * A real docker-registry for tests: src/sandbox's loopback registry, plus
 * the test-only bearer-token service (token-server.ts) and the CI-aware
 * skip. Every started registry is also killed (and its dir removed) when
 * the test process exits, so a failing test cannot leak one.
 */
import { registryAvailable, REGISTRY_BINARY, startLocalRegistry } from '../../src/sandbox/local-registry';
import { requireBinary } from './require-env';
import { startTokenServer, type RunningTokenServer, type TokenAuthOptions, type TokenServer } from './token-server';

export { freePort } from '../../src/sandbox/free-port';
export { registryAvailable } from '../../src/sandbox/local-registry';
export type { TokenAuthOptions, TokenRequestRecord, TokenServer } from './token-server';

export interface RegistryFixture {
  /** "127.0.0.1:PORT" */
  host: string;
  /** Private temp dir (storage, config, auth files); removed by stop(). */
  dir: string;
  /** Present when started with `token`. */
  token?: TokenServer;
  /** The registry's recent stderr, for diagnosing a failure. */
  logs(): string;
  stop(): Promise<void>;
}

export interface StartRegistryOptions {
  htpasswd?: { username: string; password: string };
  token?: TokenAuthOptions;
}

/**
 * For a mocha `before`: skip the suite when docker-registry (or, for auth
 * suites, htpasswd/openssl) is missing, except in CI (CI=true), where a
 * missing binary fails the suite.
 */
export function skipWithoutRegistry(ctx: Mocha.Context, auth: Array<'htpasswd' | 'token'> = []): void {
  requireBinary(ctx, REGISTRY_BINARY);
  if (auth.includes('htpasswd')) requireBinary(ctx, 'htpasswd');
  if (auth.includes('token')) requireBinary(ctx, 'openssl');
}

export async function startRegistry(opts: StartRegistryOptions = {}): Promise<RegistryFixture> {
  if (!registryAvailable()) throw new Error(`${REGISTRY_BINARY} is not installed (Debian package docker-registry)`);
  const tokenOpts = opts.htpasswd === undefined ? opts.token : undefined;
  let tokenServer: RunningTokenServer | undefined;
  try {
    const registry = await startLocalRegistry({
      htpasswd: opts.htpasswd,
      authConfig:
        tokenOpts === undefined
          ? undefined
          : async (dir) => {
              tokenServer = await startTokenServer(dir, tokenOpts);
              return tokenServer.authLines;
            },
    });
    const running = tokenServer;
    const fixture: RegistryFixture = {
      host: registry.host,
      dir: registry.dir,
      logs: registry.logs,
      stop: async () => {
        await registry.stop();
        await running?.close();
      },
    };
    if (running !== undefined) fixture.token = running.info;
    return fixture;
  } catch (error) {
    await tokenServer?.close();
    throw error;
  }
}
