// TCP listener for the lab's wan namespace: node tcp-listen.mjs PORT [ADDRESS]
// (ADDRESS default 0.0.0.0; "::" listens on IPv6 and IPv4).
// Prints "LISTENING <port>" once bound and "ACCEPT <peer-address> <peer-port>"
// for each accepted connection (then answers "hello" and closes it).
// Exits when stdin closes or on SIGTERM.
import net from 'node:net';

const port = Number(process.argv[2]);
const server = net.createServer((sock) => {
  process.stdout.write(`ACCEPT ${sock.remoteAddress} ${sock.remotePort}\n`);
  sock.on('error', () => {});
  sock.end('hello\n');
});
server.on('error', (e) => {
  process.stderr.write(`listen error: ${e.message}\n`);
  process.exit(2);
});
server.listen(port, process.argv[3] ?? '0.0.0.0', () => process.stdout.write(`LISTENING ${port}\n`));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
