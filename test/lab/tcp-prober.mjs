// TCP prober for benchmarks: node tcp-prober.mjs HOST PORT EVERY_MS TIMEOUT_MS
// Starts a NEW connection (a fresh flow: a new source port) every EVERY_MS,
// whatever became of the earlier ones, and prints one line per attempt when
// it ends:
//   OK <n> <started> <ended>              connected
//   FAIL <n> <started> <ended> <reason>   refused, reset, unreachable, or no
//                                         answer within TIMEOUT_MS
// n numbers the attempts from 0 in the order they started; started and ended
// are epoch milliseconds (performance.timeOrigin + performance.now()). Prints
// "STARTED" first. Exits on SIGTERM or when stdin closes.
import net from 'node:net';

const [host, portText, everyText, timeoutText] = process.argv.slice(2);
const port = Number(portText);
const everyMs = Number(everyText ?? '10');
const timeoutMs = Number(timeoutText ?? '500');
const now = () => (performance.timeOrigin + performance.now()).toFixed(1);

let n = 0;
function attempt() {
  const id = n++;
  const started = now();
  const sock = net.connect({ host, port });
  let done = false;
  const end = (line) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    sock.destroy();
    process.stdout.write(`${line}\n`);
  };
  const timer = setTimeout(() => end(`FAIL ${id} ${started} ${now()} timeout`), timeoutMs);
  sock.on('connect', () => end(`OK ${id} ${started} ${now()}`));
  sock.on('error', (e) => end(`FAIL ${id} ${started} ${now()} ${e.code ?? e.message}`));
}

process.stdout.write('STARTED\n');
const interval = setInterval(attempt, everyMs);
attempt();
const stop = () => {
  clearInterval(interval);
  process.exit(0);
};
process.stdin.on('end', stop);
process.stdin.resume();
process.on('SIGTERM', stop);
