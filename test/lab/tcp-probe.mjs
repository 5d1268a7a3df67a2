// TCP probe for the lab's guest namespace: node tcp-probe.mjs HOST PORT TIMEOUT_MS [LOCAL_ADDRESS]
// (LOCAL_ADDRESS: bind the source address first).
// Prints "CONNECTED <local-address> <local-port>" and exits 0 if the connection
// is established (and the banner read, if any, within the time-out), else
// prints "FAILED <reason>" and exits 1.
import net from 'node:net';

const [host, portText, timeoutText, localAddress] = process.argv.slice(2);
const timeoutMs = Number(timeoutText ?? '3000');
const sock = net.connect({ host, port: Number(portText), ...(localAddress ? { localAddress } : {}) });
const timer = setTimeout(() => {
  process.stdout.write(`FAILED timeout after ${timeoutMs} ms\n`);
  sock.destroy();
  process.exit(1);
}, timeoutMs);
sock.on('connect', () => {
  clearTimeout(timer);
  process.stdout.write(`CONNECTED ${sock.localAddress} ${sock.localPort}\n`);
  sock.destroy();
  process.exit(0);
});
sock.on('error', (e) => {
  clearTimeout(timer);
  process.stdout.write(`FAILED ${e.message}\n`);
  process.exit(1);
});
