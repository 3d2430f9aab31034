/**
 * The machine's floor under every per-delivery figure: what a Node process pays in CPU to write one packet to each of
 * BENCH_FLOOR_CONNECTIONS (default 10,000) loopback TCP connections and read each one's 4-byte acknowledgement, with
 * no MQTT, routing, state or check of any kind. No broker in Node delivers a QoS 1 message for less on this machine:
 * this is the kernel's loopback TCP (the receiving side's work is charged to the sender here) and Node's socket
 * writes and reads.
 *
 * `node dist/bench/socket-floor.js`: the writer is this process; the connections' other ends are a child process that
 * acknowledges every packet it reads, as an MQTT client sends a PUBACK. Prints the writer's CPU per delivery, the
 * median of BENCH_FLOOR_ROUNDS (default 20) rounds of one packet to every connection.
 */
import { fork } from 'node:child_process';
import { createConnection, createServer, type Socket } from 'node:net';
import { env } from './env-number.js';
import { fmt, median } from './figures.js';

/** About a stamped text message's PUBLISH (fixed header, topic, packet identifier, the message's JSON). */
const PACKET_BYTES = 256;
const ACK = Buffer.from([0x40, 0x02, 0x00, 0x01]); // a PUBACK's bytes

if (process.argv[2] === 'acknowledger') acknowledge(Number(process.argv[3]), Number(process.argv[4]));
else await measure(env('BENCH_FLOOR_CONNECTIONS', 10_000), env('BENCH_FLOOR_ROUNDS', 20));

/** The connections' other ends: each acknowledges every whole packet it has read. */
async function acknowledge(port: number, connections: number): Promise<void> {
  for (let i = 0; i < connections; i++) {
    const socket = createConnection(port, '127.0.0.1');
    let unread = 0;
    socket.on('data', (chunk: Buffer) => {
      unread += chunk.length;
      for (; unread >= PACKET_BYTES; unread -= PACKET_BYTES) socket.write(ACK);
    });
    socket.on('error', () => process.exit(1));
    if (i % 200 === 199) await new Promise((resolve) => setTimeout(resolve, 10)); // the listen backlog
  }
}

async function measure(connections: number, rounds: number): Promise<void> {
  const sockets: Socket[] = [];
  let acks = 0;
  let onAcked: (() => void) | undefined;
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    sockets.push(socket);
    socket.on('data', (chunk: Buffer) => {
      acks += chunk.length / ACK.length;
      if (acks >= connections) onAcked?.();
    });
    if (sockets.length === connections) onAcked?.();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const acknowledger = fork(new URL(import.meta.url).pathname, ['acknowledger', String(port), String(connections)]);
  const until = (done: () => boolean) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the acknowledger stopped answering')), 60_000);
      onAcked = () => {
        if (!done()) return;
        clearTimeout(timer);
        resolve();
      };
      onAcked();
    });
  await until(() => sockets.length === connections);
  const packet = Buffer.alloc(PACKET_BYTES, 0x61);
  const perDelivery: number[] = [];
  for (let round = 0; round < rounds; round++) {
    acks = 0;
    const before = process.cpuUsage();
    for (const socket of sockets) socket.write(packet);
    await until(() => acks >= connections);
    const used = process.cpuUsage(before);
    perDelivery.push((used.user + used.system) / connections);
  }
  acknowledger.kill();
  server.close();
  for (const socket of sockets) socket.destroy();
  console.log(
    `floor per delivery: one ${PACKET_BYTES}-byte write to each of ${connections} loopback connections and its ` +
      `acknowledgement read: ${fmt(median(perDelivery), 1)} µs of the writer's CPU (median of ${rounds} rounds)`,
  );
}
