/** Disk usage of a snapshot directory: bytes of blocks and inodes, hardlinks counted once, like `du`. */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';

export async function directoryUsage(dir: string): Promise<{ size: number; inodes: number }> {
  const seen = new Set<string>();
  let size = 0;
  let inodes = 0;
  const walk = async (path: string): Promise<void> => {
    const st = await fs.lstat(path, { bigint: false });
    const id = `${st.dev}:${st.ino}`;
    if (seen.has(id)) return;
    seen.add(id);
    inodes++;
    size += st.blocks * 512;
    if (st.isDirectory()) {
      for (const name of await fs.readdir(path)) await walk(join(path, name));
    }
  };
  try {
    await walk(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return { size, inodes };
}
