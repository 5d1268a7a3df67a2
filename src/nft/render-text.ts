// The batch as nft(8) text, for people reading `kvmnftd plan`. It covers
// exactly the statements the planner emits; anything else is a programming
// error and throws. Tests load both forms into nft and compare the results.
import { cidrBounds } from '../net/ip.js';
import { scalar, type Command, type Expr, type Json } from './json.js';

export function renderBatch(commands: readonly Command[]): string {
  return commands.map(renderCommand).join('\n') + (commands.length > 0 ? '\n' : '');
}

function renderCommand(cmd: Command): string {
  if ('add' in cmd) {
    const o = cmd.add;
    if ('table' in o) return `add table ${o.table.family} ${o.table.name}`;
    if ('chain' in o) {
      const c = o.chain;
      const head = `add chain ${c.family} ${c.table} ${c.name}`;
      return c.hook ? `${head} { type ${c.type} hook ${c.hook} priority ${c.prio}; policy ${c.policy}; }` : head;
    }
    return `add rule ${o.rule.family} ${o.rule.table} ${o.rule.chain} ${renderRule(o.rule.expr ?? [], o.rule.comment)}`;
  }
  if ('insert' in cmd) {
    const r = cmd.insert.rule;
    const before = r.handle === undefined ? '' : `handle ${r.handle} `;
    return `insert rule ${r.family} ${r.table} ${r.chain} ${before}${renderRule(r.expr ?? [], r.comment)}`;
  }
  if ('replace' in cmd) {
    const r = cmd.replace.rule;
    return `replace rule ${r.family} ${r.table} ${r.chain} handle ${r.handle} ${renderRule(r.expr ?? [], r.comment)}`;
  }
  if ('flush' in cmd) return `flush chain ${cmd.flush.chain.family} ${cmd.flush.chain.table} ${cmd.flush.chain.name}`;
  const d = cmd.delete;
  if ('table' in d) return `delete table ${d.table.family} ${d.table.name}`;
  if ('chain' in d) return `delete chain ${d.chain.family} ${d.chain.table} ${d.chain.name}`;
  return `delete rule ${d.rule.family} ${d.rule.table} ${d.rule.chain} handle ${d.rule.handle}`;
}

/** Whether a rule consists only of statements kvmnftd writes (and can render). */
export function isRenderable(expr: readonly Expr[]): boolean {
  try {
    renderRule(expr);
    return true;
  } catch {
    return false;
  }
}

export function renderRule(expr: readonly Expr[], comment?: string): string {
  const parts = expr.map(renderExpr);
  if (comment !== undefined) parts.push(`comment ${quote(comment)}`);
  return parts.join(' ');
}

/** A rule as nft text; statements the renderer does not know are shown in a short generic form. */
export function describeRule(expr: readonly Expr[], comment?: string): string {
  try {
    return renderRule(expr, comment);
  } catch {
    const parts = expr.map((e) => {
      try {
        return renderRule([e]);
      } catch {
        const [[kind, body] = ['?', null]] = Object.entries(e);
        if (kind === 'xt' && typeof body === 'object' && body !== null && !Array.isArray(body))
          return `xt ${scalar(body['type'])} ${scalar(body['name'])}`;
        if (kind === 'drop' || kind === 'reject' || kind === 'accept' || kind === 'return') return kind;
        if ((kind === 'jump' || kind === 'goto') && typeof body === 'object' && body !== null && !Array.isArray(body))
          return `${kind} ${scalar(body['target'])}`;
        return `${kind} ${JSON.stringify(body)}`;
      }
    });
    if (comment !== undefined) parts.push(`comment "${comment}"`);
    return parts.join(' ');
  }
}

function renderExpr(e: Expr): string {
  const [[kind, body]] = Object.entries(e) as [[string, Json]];
  switch (kind) {
    case 'match':
      return renderMatch(obj(body));
    case 'counter':
    case 'accept':
    case 'return':
    case 'drop':
      return kind;
    case 'limit': {
      const b = obj(body);
      if (b['per'] !== 'second' || b['inv'] !== undefined || b['rate_unit'] !== undefined)
        throw new Error(`renderExpr: unsupported limit ${JSON.stringify(b)}`);
      return `limit rate ${word(b['rate'])}/second burst ${word(b['burst'])} packets`;
    }
    case 'log': {
      const b = obj(body);
      if (Object.keys(b).length !== 1) throw new Error(`renderExpr: unsupported log ${JSON.stringify(b)}`);
      return `log prefix ${quote(word(b['prefix']))}`;
    }
    case 'jump':
      return `jump ${scalar(obj(body)['target'])}`;
    case 'mangle': {
      const b = obj(body);
      return `${renderLeft(obj(b['key'] ?? null))} set ${renderBitwise(obj(b['value'] ?? null))}`;
    }
    case 'masquerade':
      return body === null ? 'masquerade' : `masquerade to :${renderPorts(obj(body)['port'] ?? null)}`;
    case 'dnat': {
      const b = obj(body);
      const family = scalar(b['family']);
      const addr = word(b['addr']);
      const port = b['port'];
      if (port === undefined) return `dnat ${family} to ${addr}`;
      const host = family === 'ip6' ? `[${addr}]` : addr;
      if (typeof port === 'number') return `dnat ${family} to ${host}:${port}`;
      const map = obj(obj(port)['map'] ?? null);
      const pairs = obj(map['data'] ?? null)['set'];
      if (!Array.isArray(pairs)) throw new Error(`renderExpr: unsupported dnat ${JSON.stringify(b)}`);
      const elements = pairs.map((p) => (Array.isArray(p) ? p.map(word).join(' : ') : word(p)));
      return `dnat ${family} to ${addr} : ${renderLeft(obj(map['key'] ?? null))} map { ${elements.join(', ')} }`;
    }
    case 'snat': {
      const b = obj(body);
      const addr = b['addr'];
      const a = typeof addr === 'string' ? addr : renderRange(obj(addr ?? null));
      const port = b['port'] === undefined ? '' : `:${renderPorts(b['port'])}`;
      return `snat ${scalar(b['family'])} to ${a}${port}`;
    }
    default:
      throw new Error(`renderExpr: unsupported statement ${kind}`);
  }
}

function renderMatch(m: { [key: string]: Json }): string {
  const left = obj(m['left'] ?? null);
  if ('&' in left) {
    // A bit test (`meta mark & 0x00002000 == 0x00002000`): nft needs the operator spelled out.
    const op = m['op'] === '!=' ? '!=' : '==';
    return `${renderBitwise(left)} ${op} ${mark(m['right'])}`;
  }
  const lhs = renderLeft(left);
  const op = m['op'] === '!=' ? ' !=' : '';
  return `${lhs}${op} ${renderValue(m['right'] ?? null, lhs)}`;
}

function renderLeft(left: { [key: string]: Json }): string {
  if ('concat' in left) {
    const parts = left['concat'];
    if (!Array.isArray(parts)) throw new Error(`renderLeft: unsupported concat ${JSON.stringify(left)}`);
    return parts.map((p) => renderLeft(obj(p))).join(' . ');
  }
  if ('meta' in left) {
    const key = scalar(obj(left['meta'] ?? null)['key']);
    return key === 'iifname' || key === 'oifname' ? key : `meta ${key}`;
  }
  if ('payload' in left) {
    const p = obj(left['payload'] ?? null);
    return `${scalar(p['protocol'])} ${scalar(p['field'])}`;
  }
  if ('ct' in left) return `ct ${scalar(obj(left['ct'] ?? null)['key'])}`;
  if ('fib' in left) {
    const f = obj(left['fib'] ?? null);
    const flags = f['flags'];
    if (!Array.isArray(flags)) throw new Error(`renderLeft: unsupported fib ${JSON.stringify(f)}`);
    return `fib ${flags.map(word).join(' . ')} ${scalar(f['result'])}`;
  }
  throw new Error(`renderLeft: unsupported left side ${JSON.stringify(left)}`);
}

/** `meta mark & 0xffffdfff`, `meta mark | 0x00002000`: a mark and a mask, as nft lists them. */
function renderBitwise(v: { [key: string]: Json }): string {
  const op = '&' in v ? '&' : '|' in v ? '|' : undefined;
  const operands = op === undefined ? undefined : v[op];
  if (!op || !Array.isArray(operands) || operands.length !== 2)
    throw new Error(`renderBitwise: unsupported value ${JSON.stringify(v)}`);
  const lhs = renderLeft(obj(operands[0]));
  if (lhs !== 'meta mark') throw new Error(`renderBitwise: unsupported left side ${lhs}`);
  return `${lhs} ${op} ${mark(operands[1])}`;
}

/** A 32-bit mark as nft prints it: 0x00002000. */
function mark(v: Json | undefined): string {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffff_ffff)
    throw new Error(`expected a 32-bit mark, got ${JSON.stringify(v)}`);
  return `0x${v.toString(16).padStart(8, '0')}`;
}

/** Left sides whose values are interface names: quoted. */
const QUOTED: ReadonlySet<string> = new Set(['iifname', 'oifname', 'meta ibrname']);

function renderValue(v: Json, lhs: string): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return QUOTED.has(lhs) ? quote(v) : v;
  if (Array.isArray(v)) return v.map((x) => renderValue(x, lhs)).join(',');
  const o = obj(v);
  if ('prefix' in o) {
    const p = obj(o['prefix'] ?? null);
    return `${scalar(p['addr'])}/${scalar(p['len'])}`;
  }
  if ('set' in o) return `{ ${(o['set'] as Json[]).map((x) => renderValue(x, lhs)).join(', ')} }`;
  if ('range' in o) return renderRange(o);
  if ('concat' in o && Array.isArray(o['concat'])) return o['concat'].map((x) => renderValue(x, lhs)).join(' . ');
  throw new Error(`renderValue: unsupported value ${JSON.stringify(v)}`);
}

/**
 * A SNAT address range. nft lists a range that is one prefix block as that
 * prefix, but cannot read `to 10.0.0.4/30:1024-65535` back: the text form
 * always spells the range out.
 */
function renderRange(o: { [key: string]: Json }): string {
  if ('prefix' in o) {
    const p = obj(o['prefix'] ?? null);
    const bounds = cidrBounds(word(p['addr']), Number(word(p['len'])));
    if (!bounds) throw new Error(`renderRange: unsupported prefix ${JSON.stringify(o)}`);
    return bounds.join('-');
  }
  const r = o['range'];
  if (!Array.isArray(r) || r.length !== 2) throw new Error(`renderRange: unsupported value ${JSON.stringify(o)}`);
  return r.map(word).join('-');
}

/** A name, address or number inside a statement; anything else is not something kvmnftd writes. */
function word(v: Json | undefined): string {
  if (typeof v === 'string' || typeof v === 'number') return String(v);
  throw new Error(`expected a name or number, got ${JSON.stringify(v)}`);
}

function renderPorts(port: Json): string {
  if (typeof port === 'number') return String(port);
  const [a, b] = obj(port)['range'] as [number, number];
  return a === b ? String(a) : `${a}-${b}`;
}

function obj(v: Json | undefined): { [key: string]: Json } {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new Error(`expected an object, got ${JSON.stringify(v)}`);
  return v;
}

/** nft strings are double-quoted; our inputs are validated to contain no quotes or backslashes. */
function quote(value: string): string {
  if (/["\\\n]/.test(value)) throw new Error(`refusing to render ${JSON.stringify(value)}`);
  return `"${value}"`;
}
