// libvirt answers nothing while it re-creates its own firewall rules (after a
// flush it does that for every network, and takes a second or more). A pass
// that waited for its network list meanwhile would leave the ruleset as
// libvirt's restore leaves it: port forwards refused by libvirt's reject for
// 0.3-1.4 s, until the next pass. So when libvirt does not answer within a
// short deadline, the pass goes on with what libvirt said last; its late
// answer is kept, and starts another pass when it differs.

/** How long a pass waits for libvirt before planning from its last answer. */
export const LIBVIRT_ANSWER_DEADLINE_MS = 200;

export class AnswerOrLast<T> {
  private asked = 0;
  private stored = 0;
  private latest: T | undefined;

  constructor(
    private readonly deadlineMs: number,
    private readonly same: (a: T, b: T) => boolean = (a, b) => JSON.stringify(a) === JSON.stringify(b),
  ) {}

  /** The last answer, whether it came in time or late. */
  get last(): T | undefined {
    return this.latest;
  }

  /**
   * The answer of `ask()` if it comes within the deadline (or if nothing is known yet), else the last one.
   * A late answer that differs from what the caller went on with calls `lateChange`; a late failure is
   * dropped (the next pass asks again). An answer older than one already stored is never kept.
   */
  async get(ask: () => Promise<T>, lateChange: () => void): Promise<T> {
    const seq = ++this.asked;
    const wentOn: { with?: T } = {}; // set when the caller goes on without this answer
    const answer = ask().then((value) => {
      if (seq > this.stored) {
        this.stored = seq;
        this.latest = value;
        if (wentOn.with !== undefined && !this.same(wentOn.with, value)) lateChange();
      }
      return value;
    });
    const known = this.latest;
    if (known === undefined) return answer;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), this.deadlineMs)));
    try {
      const first = await Promise.race([answer.then((value) => ({ value })), deadline]);
      if (first !== 'late') return first.value;
    } finally {
      clearTimeout(timer);
    }
    wentOn.with = known;
    answer.catch(() => undefined);
    return known;
  }
}
