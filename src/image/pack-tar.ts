/**
 * A small layer tar built in memory with tar-stream: root-owned entries
 * with a fixed mtime, so the same entries always give the same bytes.
 */
import { pack, type Header } from 'tar-stream';

export type TarEntryHeader = Partial<Header> & Pick<Header, 'name'>;

export interface TarEntrySpec {
  header: TarEntryHeader;
  content?: Buffer | string;
}

/** 2023-11-14: a fixed time keeps built images reproducible. */
export const FIXED_MTIME = new Date(1_700_000_000 * 1000);

export async function packTar(entries: TarEntrySpec[]): Promise<Buffer> {
  const packer = pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of packer) chunks.push(chunk as Buffer);
  })();
  for (const e of entries) {
    const header: TarEntryHeader = { uid: 0, gid: 0, uname: 'root', gname: 'root', mtime: FIXED_MTIME, ...e.header };
    await new Promise<void>((resolve, reject) => packer.entry(header, e.content ?? '', (err) => (err ? reject(err) : resolve())));
  }
  packer.finalize();
  await collected;
  return Buffer.concat(chunks);
}
