/**
 * The cold-start benchmark's image content: a realistic root filesystem,
 * Debian bookworm minbase + python3 built with debootstrap from the Debian
 * mirror, packed as one gzip layer, with the list of files python3 opens at
 * start-up (from strace when it is installed, else a fixed list). Built once
 * and cached under the bench cache dir. If the mirror cannot be reached, a
 * synthetic root filesystem is packed from this machine's own python3 and
 * /usr instead, and the result says so.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { promisify } from 'node:util';
import { benchCacheDir } from './bench-layer';

const execFileP = promisify(execFile);
const CACHE_VERSION = 1;
const MIRROR = 'http://deb.debian.org/debian';
const SUITE = 'bookworm';
export const PYTHON_COMMAND = ['python3', '-c', 'print("ready")'];
export const PYTHON_OUTPUT = 'ready\n';

export interface PythonRootfs {
  /** gzip -6 tar.gz of the whole root filesystem, the layer as a registry would serve it. */
  layerPath: string;
  /** Uncompressed tar bytes. */
  tarSize: number;
  gzSize: number;
  /** Files python3 opens at start-up, in order, rootfs-absolute: the --prioritize list. */
  startupFiles: string[];
  /** How the start-up list was made. */
  startupFilesFrom: 'strace' | 'fixed list';
  /** 'debootstrap' (Debian bookworm minbase + python3) or 'synthetic' (this machine's files: the mirror was unreachable). */
  source: 'debootstrap' | 'synthetic';
  /** One line for the report. */
  description: string;
  /** Why the synthetic fallback was used. */
  fallbackReason?: string;
}

/**
 * The kernel maps a program's ELF interpreter at execve without an open(),
 * so strace does not list it; the loader is read first of all.
 */
const ELF_INTERPRETERS = ['/lib64/ld-linux-x86-64.so.2', '/usr/lib64/ld-linux-x86-64.so.2', '/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'];

/** The --prioritize list: the start-up files, with the dynamic loader after the executables (names not in the layer are ignored). */
export function prioritizedFiles(rootfs: PythonRootfs): string[] {
  const files = rootfs.startupFiles.filter((f) => !ELF_INTERPRETERS.includes(f));
  const afterExecutables = files.findIndex((f) => !f.startsWith('/usr/bin/'));
  const at = afterExecutables < 0 ? files.length : afterExecutables;
  return [...files.slice(0, at), ...ELF_INTERPRETERS, ...files.slice(at)];
}

function cacheDir(): string {
  return join(benchCacheDir(), 'cold-start');
}

/** Files a Debian python3 reads before printing, when strace is not there to tell. */
const FIXED_STARTUP_FILES = [
  '/usr/bin/python3',
  '/usr/bin/python3.11',
  '/etc/ld.so.cache',
  '/usr/lib/x86_64-linux-gnu/libm.so.6',
  '/usr/lib/x86_64-linux-gnu/libz.so.1',
  '/usr/lib/x86_64-linux-gnu/libexpat.so.1',
  '/usr/lib/x86_64-linux-gnu/libc.so.6',
  '/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2',
  '/usr/lib/python3.11/encodings/__init__.py',
  '/usr/lib/python3.11/encodings/__pycache__/__init__.cpython-311.pyc',
  '/usr/lib/python3.11/encodings/aliases.py',
  '/usr/lib/python3.11/encodings/__pycache__/aliases.cpython-311.pyc',
  '/usr/lib/python3.11/encodings/utf_8.py',
  '/usr/lib/python3.11/encodings/__pycache__/utf_8.cpython-311.pyc',
  '/usr/lib/python3.11/__pycache__/codecs.cpython-311.pyc',
  '/usr/lib/python3.11/__pycache__/io.cpython-311.pyc',
  '/usr/lib/python3.11/__pycache__/abc.cpython-311.pyc',
  '/usr/lib/python3.11/__pycache__/site.cpython-311.pyc',
  '/usr/lib/python3.11/__pycache__/os.cpython-311.pyc',
  '/usr/lib/python3.11/__pycache__/stat.cpython-311.pyc',
  '/usr/lib/python3.11/__pycache__/_collections_abc.cpython-311.pyc',
  '/usr/lib/python3.11/__pycache__/posixpath.cpython-311.pyc',
  '/usr/lib/python3.11/__pycache__/genericpath.cpython-311.pyc',
  '/usr/lib/python3.11/__pycache__/_sitebuiltins.cpython-311.pyc',
  '/usr/lib/python3.11/__pycache__/sitecustomize.cpython-311.pyc',
  '/usr/lib/python3.11/__pycache__/_distutils_hack.cpython-311.pyc',
  '/usr/lib/python3.11/sitecustomize.py',
];

async function run(cmd: string, args: string[], timeoutMs: number, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20, env });
  return stdout;
}

async function haveBinary(name: string): Promise<boolean> {
  try {
    await execFileP('sh', ['-c', 'command -v "$1"', 'sh', name]);
    return true;
  } catch {
    return false;
  }
}

/** Resolve `path` (rootfs-absolute) inside `root`, following symlinks as the container would see them. */
async function resolveInRoot(root: string, path: string): Promise<string[]> {
  const seen: string[] = [];
  let current = posix.normalize(path);
  for (let hops = 0; hops < 32; hops++) {
    // Resolve the directories first, one component at a time.
    const parts = current.split('/').filter(Boolean);
    let resolved = '';
    let changed = false;
    for (const [i, part] of parts.entries()) {
      const candidate = `${resolved}/${part}`;
      const st = await lstat(join(root, candidate)).catch(() => undefined);
      if (st === undefined) return seen;
      if (st.isSymbolicLink()) {
        seen.push(candidate);
        const target = await readlink(join(root, candidate));
        const base = target.startsWith('/') ? target : posix.join(resolved || '/', target);
        current = posix.normalize(posix.join(base, ...parts.slice(i + 1)));
        changed = true;
        break;
      }
      resolved = candidate;
    }
    if (!changed) {
      seen.push(resolved);
      return seen;
    }
  }
  return seen;
}

/** Regular files and symlinks python3 opens (successfully) or executes at start-up, in order, from strace. */
async function traceStartup(root: string): Promise<string[]> {
  const out = join(cacheDir(), 'strace.txt');
  await run('strace', ['-f', '-e', 'trace=chroot,open,openat,execve', '-o', out, 'chroot', root, ...PYTHON_COMMAND], 120_000, {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    LANG: 'C.UTF-8',
  });
  const lines = (await readFile(out, 'utf8')).split('\n');
  const paths: string[] = [];
  // What `chroot` itself opens on the host before it enters the root does not count.
  let inside = false;
  for (const line of lines) {
    if (/ chroot\(".*\) = 0/.test(line)) inside = true;
    if (!inside) continue;
    // 123 openat(AT_FDCWD, "/usr/lib/...", O_RDONLY|O_CLOEXEC) = 3
    const m = /(?:openat\(AT_FDCWD, |open\(|execve\()"([^"]+)".*\) = (-?\d+)/.exec(line);
    if (!m || Number(m[2]) < 0 || !m[1]!.startsWith('/')) continue;
    paths.push(m[1]!);
  }
  return paths;
}

/** Rootfs-absolute files for --prioritize: every path and the symlinks on its way, existing regular files and links only. */
async function startupList(root: string, paths: string[]): Promise<string[]> {
  const list: string[] = [];
  for (const path of paths) {
    if (path.startsWith('/proc/') || path.startsWith('/dev/') || path.startsWith('/sys/')) continue;
    for (const p of await resolveInRoot(root, path)) {
      const st = await lstat(join(root, p)).catch(() => undefined);
      if (st && (st.isFile() || st.isSymbolicLink()) && !list.includes(p)) list.push(p);
    }
  }
  return list;
}

async function debootstrap(root: string, log: (line: string) => void): Promise<void> {
  log(`debootstrap --variant=minbase ${SUITE} ${root} ${MIRROR} (a few minutes; cached afterwards)`);
  await run('debootstrap', ['--variant=minbase', SUITE, root, MIRROR], 30 * 60_000);
  log('chroot apt-get install -y python3');
  const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', DEBIAN_FRONTEND: 'noninteractive', LANG: 'C.UTF-8' };
  await run('chroot', [root, 'apt-get', 'update', '-q'], 10 * 60_000, env);
  await run('chroot', [root, 'apt-get', 'install', '-y', '-q', '--no-install-recommends', 'python3'], 20 * 60_000, env);
  // What a Dockerfile would clean up: package caches and lists.
  await run('chroot', [root, 'apt-get', 'clean'], 60_000, env);
  await rm(join(root, 'var/lib/apt/lists'), { recursive: true, force: true });
  await mkdir(join(root, 'var/lib/apt/lists/partial'), { recursive: true });
}

/** The mirror is out of reach: this machine's python3 with its libraries, plus /usr/share up to a realistic size. */
async function synthetic(root: string, log: (line: string) => void): Promise<void> {
  log('packing a synthetic root filesystem from this machine\'s python3 and /usr');
  const script = `
set -e
root="$1"
mkdir -p "$root"
for l in bin sbin lib lib64; do [ -L "/$l" ] && cp -a "/$l" "$root/$l"; done
py=$(readlink -f "$(command -v python3)")
libs=$(ldd "$py" | awk '/=>/ {print $3} /ld-linux/ {print $1}')
stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
tar -C / -cf - --hard-dereference usr/bin/python3 "\${py#/}" $(for l in $libs; do readlink -f "$l" | sed 's|^/||'; echo "\${l#/}"; done) "\${stdlib#/}" etc/ld.so.cache usr/share/doc usr/share/locale usr/share/i18n usr/share/zoneinfo 2>/dev/null | tar -C "$root" -xf - || true
mkdir -p "$root/etc" "$root/tmp" "$root/proc" "$root/dev" "$root/sys"
`;
  await run('bash', ['-c', script, 'bash', root], 10 * 60_000);
}

export async function ensurePythonRootfs(log: (line: string) => void): Promise<PythonRootfs> {
  const dir = cacheDir();
  const metaPath = join(dir, 'rootfs.json');
  if (existsSync(metaPath)) {
    const meta = JSON.parse(await readFile(metaPath, 'utf8')) as PythonRootfs & { version: number };
    if (meta.version === CACHE_VERSION && existsSync(meta.layerPath)) return meta;
  }
  await mkdir(dir, { recursive: true });
  const root = join(dir, 'rootfs');
  await rm(root, { recursive: true, force: true });
  let source: PythonRootfs['source'] = 'debootstrap';
  let fallbackReason: string | undefined;
  try {
    await debootstrap(root, log);
  } catch (err) {
    fallbackReason = `debootstrap from ${MIRROR} failed: ${((err as Error).message.split('\n').find((l) => /E:|W:|fail|error/i.test(l)) ?? (err as Error).message).slice(0, 300)}`;
    log(fallbackReason);
    source = 'synthetic';
    await rm(root, { recursive: true, force: true });
    await synthetic(root, log);
  }

  let startupFilesFrom: PythonRootfs['startupFilesFrom'] = 'fixed list';
  let startupFiles: string[] = [];
  if (await haveBinary('strace')) {
    try {
      startupFiles = await startupList(root, await traceStartup(root));
      startupFilesFrom = 'strace';
    } catch (err) {
      log(`strace of python3 failed (${(err as Error).message.split('\n')[0]}); using a fixed list`);
    }
  }
  if (startupFilesFrom === 'fixed list') startupFiles = await startupList(root, FIXED_STARTUP_FILES);
  log(`${startupFiles.length} start-up files (${startupFilesFrom})`);

  const tarPath = join(dir, 'rootfs.tar');
  const layerPath = join(dir, 'rootfs.tar.gz');
  // Sorted names, numeric owners and xattrs: like an image builder's layer.
  await run('tar', ['--numeric-owner', '--sort=name', '--xattrs', '--format=pax', '-C', root, '-cf', tarPath, '.'], 10 * 60_000);
  const tarSize = (await stat(tarPath)).size;
  await run('sh', ['-c', 'gzip -n -6 -c < "$1" > "$2"', 'sh', tarPath, layerPath], 10 * 60_000);
  await rm(tarPath);
  await rm(root, { recursive: true, force: true });
  const gzSize = (await stat(layerPath)).size;
  const description =
    source === 'debootstrap'
      ? `Debian ${SUITE} minbase + python3 (debootstrap), one layer`
      : 'SYNTHETIC image (the Debian mirror was unreachable): this machine\'s python3, its libraries and part of /usr, one layer';
  const result: PythonRootfs = { layerPath, tarSize, gzSize, startupFiles, startupFilesFrom, source, description, ...(fallbackReason ? { fallbackReason } : {}) };
  await writeFile(metaPath, JSON.stringify({ ...result, version: CACHE_VERSION }, null, 2));
  return result;
}
