// One long-lived `nft -j -t -i` for the daemon. Each pass reads the ruleset
// and often commits a batch: as two fresh nft processes that is 25-60 ms of
// fork, exec and library start-up on a small VM, most of a self-healing
// repair. Through this session a read costs about 1 ms.
//
// nft's interactive mode runs each input line through libnftables, which
// takes a line that parses as JSON as a JSON batch (with -j) and anything
// else as nft syntax. Lines written here are only `list ruleset`, a JSON
// batch made pure ASCII (non-ASCII escaped as \uXXXX: the line editor reads
// bytes, jansson decodes the escapes), and a sentinel: a line that is a
// syntax error naming a random nonce. nft answers each command in order and
// echoes a bad line in its error, so the nonce on stderr ends the answer.
//
// Measured with nft 1.0.6 (libedit): the line editor reads its input about
// 1.7 us a byte, so a batch over BIG_BATCH_BYTES goes to a one-shot
// `nft -j -f` instead. It also keeps every distinct line in its history:
// the session is replaced after REQUESTS_PER_SESSION requests, and HOME
// points nowhere so that nothing is written to root's ~/.nft.history.
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import type { Writable } from 'node:stream';
import type { ChildEnd } from '../util/child.js';
import { spawnNft } from './nft-process.js';
import type { Batch } from './json.js';
import { nftFailure, nftRunner, type NftRunner } from './nft-runner.js';
import { startSpareNft, type SpareNft } from './nft-spare.js';
import { indexRuleset, type Ruleset } from './ruleset.js';

/** Above this, libedit's byte-at-a-time input costs more than a process of its own (about 20 ms here). */
export const BIG_BATCH_BYTES = 8 * 1024;
/** Bounds the session's history (memory in the nft process). */
export const REQUESTS_PER_SESSION = 500;
const ANSWER_TIMEOUT_MS = 15_000;
/** After a fault, one-shot nft until the back-off has passed; doubles up to the maximum. */
const RESTART_MS = { first: 500, max: 30_000 };
/** Pipes both ways; HOME nowhere, so that nft neither reads nor writes a history file. */
const SESSION_OPTIONS = { stdin: 'pipe', env: { HOME: '/nonexistent', TERM: 'dumb' } } as const;

/** A fault of the session itself (not nft refusing a command): answered by a one-shot nft. */
class SessionFault extends Error {
  override name = 'SessionFault';
}

/** JSON text with every non-ASCII character escaped: one line of printable ASCII. */
export function asciiJson(json: string): string {
  return json.replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

interface Pending {
  sentinel: string;
  /** Whether the command prints one line on stdout (list) or nothing (a batch). */
  wantsLine: boolean;
  resolve: (answer: { stdout: string; stderr: string }) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** One `nft -j -t -i` child and the request it is answering. */
class Session {
  private readonly child: ChildProcess;
  private readonly stdin: Writable;
  private readonly ended: Promise<ChildEnd>;
  private stdout = '';
  private stderr = '';
  private pending: Pending | undefined;
  private dead = false;
  requests = 0;

  constructor(
    nft: string,
    private readonly onDeath: (why: string) => void,
  ) {
    ({ child: this.child, ended: this.ended } = spawnNft(nft, ['-j', '-t', '-i'], SESSION_OPTIONS));
    // All three are pipes (SESSION_OPTIONS, spawnNft).
    const { stdin, stdout, stderr } = this.child as ChildProcess & {
      stdin: Writable;
      stdout: NodeJS.ReadableStream;
      stderr: NodeJS.ReadableStream;
    };
    this.stdin = stdin;
    stdout.setEncoding('utf8');
    stderr.setEncoding('utf8');
    stdout.on('data', (chunk: string) => {
      this.stdout += chunk;
      this.settle();
    });
    stderr.on('data', (chunk: string) => {
      this.stderr += chunk;
      this.settle();
    });
    this.stdin.on('error', () => this.fault('nft session: its input closed'));
    void this.ended.then((r) => this.fault(`nft session exited (${r.exitCode ?? r.signal ?? 'unknown'})`));
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return !this.dead;
  }

  /** Runs one line; resolves with what nft printed for it. One request at a time (the caller queues). */
  run(line: string, wantsLine: boolean): Promise<{ stdout: string; stderr: string }> {
    if (this.dead) return Promise.reject(new SessionFault('nft session is gone'));
    this.requests++;
    const sentinel = `kvmnftd-sync-${randomBytes(8).toString('hex')}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => this.fault(`nft session: no answer within ${ANSWER_TIMEOUT_MS / 1000} s`),
        ANSWER_TIMEOUT_MS,
      );
      this.pending = { sentinel, wantsLine, resolve, reject, timer };
      this.stdin.write(`${line}\n${sentinel}\n`);
    });
  }

  /** Ends the session: nft exits at the end of its input; a kill if it does not. */
  close(): void {
    if (this.dead) return;
    this.dead = true;
    this.stdin.end();
    const pid = this.child.pid;
    const kill = setTimeout(() => {
      if (pid !== undefined && this.child.exitCode === null) this.child.kill('SIGKILL');
    }, 1000);
    kill.unref();
    void this.ended.finally(() => clearTimeout(kill));
  }

  /** The answer is complete when the sentinel's error has been printed whole, and a list's line with it. */
  private settle(): void {
    const p = this.pending;
    if (!p) {
      if (this.stdout !== '' || this.stderr !== '') this.fault('nft session printed something unasked');
      return;
    }
    const at = this.stderr.indexOf(`${p.sentinel}\n`);
    if (at < 0) return;
    // nft prints "Error: ...", the line, and a caret line: wait for the caret line's end.
    const end = this.stderr.indexOf('\n', at + p.sentinel.length + 1);
    if (end < 0) return;
    const errorStart = this.stderr.lastIndexOf('\n', at - 2) + 1;
    const stderr = this.stderr.slice(0, errorStart);
    const failed = /\bError\b/.test(stderr);
    const newline = this.stdout.indexOf('\n');
    if (p.wantsLine && !failed && newline < 0) return; // the line is still in the other pipe
    const stdout = p.wantsLine && newline >= 0 ? this.stdout.slice(0, newline) : '';
    const rest = p.wantsLine && newline >= 0 ? this.stdout.slice(newline + 1) : this.stdout;
    if (rest !== '') {
      this.fault('nft session printed more than one answer');
      return;
    }
    this.stdout = '';
    this.stderr = this.stderr.slice(end + 1);
    this.pending = undefined;
    clearTimeout(p.timer);
    p.resolve({ stdout, stderr });
  }

  private fault(why: string): void {
    const p = this.pending;
    this.pending = undefined;
    if (!this.dead) {
      this.dead = true;
      this.child.kill('SIGKILL');
      this.stdin.destroy(); // an nft behind a wrapper that was killed sees its input end
      this.onDeath(why);
    }
    if (p) {
      clearTimeout(p.timer);
      p.reject(new SessionFault(why));
    }
  }
}

export interface NftSessionRunner extends NftRunner {
  /** Starts the session's nft now (if none runs), so that its start-up overlaps other work. */
  start(): void;
  /**
   * Also starts a one-shot nft now that waits for a batch too big for the session (nft-spare.ts): `kvmnftd apply`
   * does, so that 100 networks' batch does not wait for nft's start-up. Unused, it ends with close().
   */
  startSpare(): void;
  /** Stops the session; later calls use one-shot nft. */
  close(): void;
  /**
   * Figures for tests and the bench: sessions started, requests answered by one and by one-shot nft (of which by
   * the spare), faults, and successors warmed up by a read of their own.
   */
  readonly counts: {
    sessions: number;
    viaSession: number;
    oneShot: number;
    spare: number;
    faults: number;
    warmUps: number;
  };
  /** The running session's nft, if any (tests, the bench). */
  sessionPid(): number | undefined;
}

/**
 * The daemon's NftRunner: reads and small batches through one `nft -i`, big
 * batches and anything after a fault of the session through one-shot nft
 * (nft-runner.ts), which also gives the same errors.
 */
export function nftSessionRunner(
  runtimeDir: string,
  nft = 'nft',
  onFault: (why: string) => void = () => undefined,
): NftSessionRunner {
  const oneShot = nftRunner(runtimeDir, nft);
  const counts = { sessions: 0, viaSession: 0, oneShot: 0, spare: 0, faults: 0, warmUps: 0 };
  let session: Session | undefined;
  let coldSuccessor: Session | undefined;
  let spare: SpareNft | undefined;
  let closed = false;
  let restartMs = RESTART_MS.first;
  let notBefore = 0;
  let queue: Promise<unknown> = Promise.resolve();

  const current = (): Session | undefined => {
    if (closed || Date.now() < notBefore) return undefined;
    if (session?.alive && session.requests < REQUESTS_PER_SESSION) return session;
    session?.close();
    counts.sessions++;
    const s: Session = new Session(nft, (why) => {
      counts.faults++;
      onFault(`${why}; one-shot nft for ${restartMs / 1000} s`);
      notBefore = Date.now() + restartMs;
      restartMs = Math.min(restartMs * 2, RESTART_MS.max);
    });
    session = s;
    return s;
  };

  /** One request through the session, in order; undefined when one-shot nft must answer it. */
  const viaSession = (line: string, wantsLine: boolean): Promise<{ stdout: string; stderr: string } | undefined> => {
    const next = queue.then(async () => {
      const s = current();
      if (!s) return undefined;
      try {
        const answer = await s.run(line, wantsLine);
        counts.viaSession++;
        restartMs = RESTART_MS.first;
        // The successor starts now, not in the way of the next request (a pass's read).
        if (s.requests >= REQUESTS_PER_SESSION) coldSuccessor = current();
        return answer;
      } catch (err) {
        if (err instanceof SessionFault) return undefined;
        throw err;
      }
    });
    queue = next.catch(() => undefined).then(warmSuccessor);
    return next;
  };

  /**
   * A fresh nft faults its heap in on its first `list ruleset` (a repair's read took 34.8 ms and its
   * commit 37.6 ms in a new session): that first read is made here, queued after the request that
   * started the successor, instead of in a pass.
   */
  const warmSuccessor = async (): Promise<void> => {
    const s = coldSuccessor;
    coldSuccessor = undefined;
    if (!s?.alive) return;
    counts.warmUps++;
    await s.run('list ruleset', true).catch(() => undefined);
  };

  return {
    counts,
    sessionPid: () => (session?.alive ? session.pid : undefined),
    async readRuleset(): Promise<Ruleset> {
      const answer = await viaSession('list ruleset', true);
      if (!answer) {
        counts.oneShot++;
        return oneShot.readRuleset();
      }
      if (/\bError\b/.test(answer.stderr)) throw nftFailure('reading the ruleset', answer.stderr);
      let doc: unknown;
      try {
        doc = JSON.parse(answer.stdout) as unknown;
      } catch {
        // nft 1.0.6 can print no JSON for a ruleset with a table that has one flag (table-by-table.ts);
        // one-shot nft then reads it as the CLI does, table by table when it must.
        counts.oneShot++;
        return oneShot.readRuleset();
      }
      return indexRuleset(doc);
    },
    async apply(batch: Batch): Promise<void> {
      // Serialised once: a big batch's text goes to one-shot nft as it is (the spare, when one waits).
      const json = JSON.stringify(batch);
      const line = json.length <= BIG_BATCH_BYTES ? asciiJson(json) : undefined;
      const answer = line !== undefined && line.length <= BIG_BATCH_BYTES ? await viaSession(line, false) : undefined;
      if (!answer) {
        counts.oneShot++;
        // A spare still starting is nearer its batch than a new nft would be.
        if (spare && !spare.ready) await spare.settled;
        const viaSpare = spare?.applyJson(json);
        if (viaSpare) counts.spare++;
        return viaSpare ?? oneShot.applyJson(json);
      }
      if (/\bError\b/.test(answer.stderr)) throw nftFailure('applying the batch', answer.stderr);
    },
    start() {
      current();
    },
    startSpare() {
      if (!closed && !spare) spare = startSpareNft(runtimeDir, nft);
    },
    close() {
      closed = true;
      session?.close();
      session = undefined;
      spare?.close();
    },
  };
}
