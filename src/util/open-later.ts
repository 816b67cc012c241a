/**
 * A synchronous stream opener for an asynchronously opened stream: the
 * source is opened only when the returned stream is first read, and again
 * on each call (so an upload can be retried).
 */
import { Readable } from 'node:stream';

export function openLater(open: () => Promise<Readable>): () => Readable {
  return () =>
    Readable.from(
      (async function* () {
        yield* await open();
      })(),
    );
}
