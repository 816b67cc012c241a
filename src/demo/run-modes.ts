/**
 * Ways the demo gets its image into containerd and starts it. Today only a
 * full pull (every layer downloaded and unpacked by overlayfs); the lazy
 * snapshotter adds a second mode here, and the demo runs each mode in turn
 * and compares their pull and start times.
 */
import type { Containerd } from '../sandbox/local-containerd';
import { timed } from './timed';

export interface RunMode {
  /** Name in the JSON report. */
  name: string;
  /** For the progress line. */
  title: string;
  /** Make the image available to `ctr run`. */
  pull(containerd: Containerd, ref: string): Promise<void>;
  /** Extra `ctr run` flags, such as `--snapshotter`. */
  runFlags: string[];
}

export interface RunResult {
  mode: string;
  pullSeconds: number;
  runSeconds: number;
  /** What the container printed. */
  output: string;
}

export const FULL_PULL: RunMode = {
  name: 'full',
  title: 'full pull (overlayfs)',
  async pull(containerd, ref) {
    await containerd.ctr(['image', 'pull', '--plain-http', ref], { timeoutMs: 120_000 });
  },
  runFlags: [],
};

export const RUN_MODES: readonly RunMode[] = [FULL_PULL];

/** Pull, then run the image's own command once and capture its output. */
export async function pullAndRun(containerd: Containerd, ref: string, mode: RunMode): Promise<RunResult> {
  const pulled = await timed(() => mode.pull(containerd, ref));
  const id = `lazypull-demo-${mode.name}`;
  // --runc-root keeps runc's state inside the sandbox dir.
  const ran = await timed(() => containerd.ctr(['run', '--rm', '--runc-root', containerd.runcRoot, ...mode.runFlags, ref, id], { timeoutMs: 60_000 }));
  return { mode: mode.name, pullSeconds: pulled.seconds, runSeconds: ran.seconds, output: ran.value.stdout };
}
