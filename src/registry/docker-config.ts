/**
 * Credentials from the docker CLI's config.json: `auths[host].auth`
 * (base64 "user:pass"), `auths[host].username/password`, and credential
 * helpers (`credHelpers[host]`, `credsStore`) run as
 * `docker-credential-NAME get`. Keys are matched the way the CLI writes
 * them ("host:port", "http://host:port", "https://host:port/v1/").
 *
 * Nothing here puts a credential into an error: parse errors from
 * JSON.parse can quote the file, so they are replaced, never wrapped.
 */

import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { LazypullError } from '../errors';
import { debug } from './debug';
import { DOCKER_HUB_REGISTRY } from './reference';

export interface Credentials {
  username: string;
  password: string;
}

/** Where the credentials came from, for messages ("docker config /root/.docker/config.json"). */
export interface FoundCredentials extends Credentials {
  source: string;
}

interface AuthEntry {
  auth?: unknown;
  username?: unknown;
  password?: unknown;
}

interface DockerConfigFile {
  auths?: Record<string, AuthEntry>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

export function defaultDockerConfigPath(): string {
  const dir = process.env.DOCKER_CONFIG;
  return dir !== undefined && dir.length > 0 ? join(dir, 'config.json') : join(homedir(), '.docker', 'config.json');
}

/** "https://127.0.0.1:5000/v1/" -> "127.0.0.1:5000"; Docker Hub's aliases collapse to one name. */
export function normalizeConfigKey(key: string): string {
  let host = key.trim().replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  const slash = host.indexOf('/');
  if (slash >= 0) host = host.slice(0, slash);
  host = host.toLowerCase();
  if (host === 'index.docker.io' || host === 'docker.io' || host === DOCKER_HUB_REGISTRY) return DOCKER_HUB_REGISTRY;
  return host;
}

function configError(path: string, why: string): LazypullError {
  return new LazypullError('LAZYPULL_ERR_REGISTRY_AUTH', `docker config ${path}: ${why}`, { path });
}

function decodeAuthEntry(entry: AuthEntry, path: string, key: string): Credentials | undefined {
  if (typeof entry.auth === 'string' && entry.auth.length > 0) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) throw configError(path, `auths["${key}"].auth is not base64 of "username:password"`);
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (typeof entry.username === 'string' && typeof entry.password === 'string') {
    return { username: entry.username, password: entry.password };
  }
  return undefined;
}

/** Reads and caches one config file; a missing file simply has no credentials. */
export class DockerConfig {
  private loaded: Promise<DockerConfigFile> | undefined;

  constructor(readonly path: string = defaultDockerConfigPath()) {}

  private load(): Promise<DockerConfigFile> {
    this.loaded ??= (async () => {
      let text: string;
      try {
        text = await readFile(this.path, 'utf8');
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return {};
        throw configError(this.path, `cannot be read (${typeof code === 'string' ? code : 'error'})`);
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw configError(this.path, 'is not valid JSON');
      }
      if (parsed === null || typeof parsed !== 'object') throw configError(this.path, 'is not a JSON object');
      return parsed as DockerConfigFile;
    })();
    return this.loaded;
  }

  /** Credentials for "host[:port]", or undefined if the config has none. */
  async lookup(host: string): Promise<FoundCredentials | undefined> {
    const config = await this.load();
    const wanted = normalizeConfigKey(host);
    const source = `docker config ${this.path}`;

    for (const [key, helper] of Object.entries(config.credHelpers ?? {})) {
      if (normalizeConfigKey(key) === wanted && typeof helper === 'string' && helper.length > 0) {
        const found = await runCredentialHelper(helper, key, this.path);
        if (found !== undefined) return { ...found, source: `credential helper docker-credential-${helper}` };
      }
    }
    // Prefer an exact key match, then any key that normalises to the host.
    const auths = config.auths ?? {};
    const keys = Object.keys(auths).sort((a, b) => Number(b === host) - Number(a === host));
    for (const key of keys) {
      if (normalizeConfigKey(key) !== wanted) continue;
      const entry = auths[key];
      if (entry === undefined || typeof entry !== 'object') continue;
      const creds = decodeAuthEntry(entry, this.path, key);
      if (creds !== undefined) {
        debug(`credentials for ${host} from ${source} key ${key}`);
        return { ...creds, source };
      }
    }
    if (typeof config.credsStore === 'string' && config.credsStore.length > 0) {
      // Stores are keyed like auths; Docker Hub is stored under its v1 URL.
      const key = wanted === DOCKER_HUB_REGISTRY ? 'https://index.docker.io/v1/' : host;
      const found = await runCredentialHelper(config.credsStore, key, this.path);
      if (found !== undefined) return { ...found, source: `credential store docker-credential-${config.credsStore}` };
    }
    return undefined;
  }
}

/** `docker-credential-NAME get` with the server on stdin; "not found" answers are not errors. */
function runCredentialHelper(name: string, serverUrl: string, path: string): Promise<Credentials | undefined> {
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) {
    return Promise.reject(configError(path, `credential helper name "${name}" is not valid`));
  }
  const program = `docker-credential-${name}`;
  return new Promise((resolve, reject) => {
    const child = execFile(program, ['get'], { timeout: 30000, maxBuffer: 1 << 20 }, (error, stdout) => {
      if (error !== null) {
        // Helpers print "credentials not found in native keychain" for unknown servers.
        if (/not found/i.test(String(stdout))) {
          resolve(undefined);
          return;
        }
        const code = (error as { code?: unknown }).code;
        reject(configError(path, `${program} get failed (${typeof code === 'string' || typeof code === 'number' ? code : 'error'})`));
        return;
      }
      try {
        const parsed = JSON.parse(String(stdout)) as { Username?: unknown; Secret?: unknown };
        if (typeof parsed.Username !== 'string' || typeof parsed.Secret !== 'string') {
          reject(configError(path, `${program} get returned no Username/Secret`));
          return;
        }
        if (parsed.Username === '<token>') {
          reject(configError(path, `${program} returned an identity token, which lazypull does not support`));
          return;
        }
        resolve({ username: parsed.Username, password: parsed.Secret });
      } catch {
        reject(configError(path, `${program} get did not print JSON`));
      }
    });
    child.stdin?.end(serverUrl);
  });
}
