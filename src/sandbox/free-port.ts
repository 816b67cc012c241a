/**
 * A TCP port nobody listens on right now, on loopback. The port is released
 * before it is returned, so another process may grab it first: daemons
 * started on it retry with a new port when the address is taken.
 */
import { createServer, type AddressInfo } from 'node:net';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
