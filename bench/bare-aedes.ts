/** Bare Aedes on TCP with its defaults: the baseline Chorus is measured against. Prints "ready" when listening. */
import { createServer } from 'node:net';
import { Aedes } from 'aedes';

const port = Number(process.argv[2]);
const aedes = await Aedes.createBroker();
const server = createServer(aedes.handle);
server.listen(port, '127.0.0.1', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => aedes.close(() => server.close(() => process.exit(0))));
