/**
 * Last-resort cleanup when this Node process exits while sandbox daemons
 * still run (a test that failed before its `after`, an uncaught error).
 * Handlers run on the 'exit' event, where only synchronous work is possible;
 * the orderly, asynchronous path is each daemon's own `stop()`.
 */

const handlers = new Set<() => void>();
let installed = false;

function runAll(): void {
  for (const handler of [...handlers]) {
    handlers.delete(handler);
    try {
      handler();
    } catch {
      // Best effort: one failing handler must not keep the others from running.
    }
  }
}

/** Run `handler` synchronously when the process exits; the returned function unregisters it. */
export function cleanupOnExit(handler: () => void): () => void {
  if (!installed) {
    installed = true;
    process.on('exit', runAll);
  }
  handlers.add(handler);
  return () => {
    handlers.delete(handler);
  };
}
