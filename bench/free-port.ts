import { createServer } from 'node:net';

/** A loopback port that was free a moment ago (bind to 0, read, close). */
export const freePort = (): Promise<number> =>
  new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
