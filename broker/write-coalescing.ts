import type { Socket } from 'node:net';

/**
 * Gathers what is written to one TCP connection within a turn of the event loop into one writev.
 *
 * Aedes delivers each packet in its own setImmediate and mqtt-packet uncorks after each packet, so a commit of n
 * messages costs every subscriber n syscalls, and n PUBACKs cost their publisher n more. Holding the socket corked
 * from its first write until the next check phase of the loop costs each of them one, for a delay of one turn.
 */
export function coalesceWrites(socket: Socket): void {
  const write = socket.write;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  socket.write = function coalescedWrite(this: Socket, ...args: unknown[]): boolean {
    if (!corked) {
      corked = true;
      socket.cork();
      setImmediate(uncork);
    }
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as Socket['write'];
}
