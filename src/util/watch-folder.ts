/**
 * Wake a waiter when something in a folder changes (inotify through
 * fs.watch), for waits on a file another process writes: the waiter checks
 * again at once instead of on its next timer tick.
 */
import { watch, type FSWatcher } from 'node:fs';

export interface FolderChanges {
  /** Resolves true at the next change in the folder (or one since the last call), false after `timeoutMs` without one. */
  next(timeoutMs: number): Promise<boolean>;
  close(): void;
}

/** Changes in `folder`; a folder that cannot be watched (missing, no inotify) only ever times out. */
export function watchFolder(folder: string): FolderChanges {
  let changed = false;
  let wake: (() => void) | undefined;
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(folder, { persistent: false }, () => {
      changed = true;
      wake?.();
    });
    watcher.on('error', () => watcher?.close());
  } catch {
    watcher = undefined;
  }
  return {
    next(timeoutMs: number): Promise<boolean> {
      if (changed) {
        changed = false;
        return Promise.resolve(true);
      }
      return new Promise((resolve) => {
        const timer = setTimeout(() => done(false), timeoutMs);
        const done = (woken: boolean): void => {
          clearTimeout(timer);
          wake = undefined;
          changed = false;
          resolve(woken);
        };
        wake = () => done(true);
      });
    },
    close(): void {
      watcher?.close();
      wake?.();
    },
  };
}
