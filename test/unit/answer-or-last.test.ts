import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { AnswerOrLast } from '../../src/daemon/answer-or-last.js';

/** A promise the test settles by hand: libvirt answering when the test says so. */
function pending<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: Error) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

describe('AnswerOrLast: a slow libvirt does not hold a pass up', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('waits as long as it takes when nothing is known yet', async () => {
    const answers = new AnswerOrLast<string[]>(200);
    const slow = pending<string[]>();
    const got = answers.get(
      () => slow.promise,
      () => expect.unreachable(),
    );
    await vi.advanceTimersByTimeAsync(5_000);
    slow.resolve(['default']);
    await expect(got).resolves.toEqual(['default']);
    expect(answers.last).toEqual(['default']);
  });

  it('an answer within the deadline is the answer', async () => {
    const answers = new AnswerOrLast<string[]>(200);
    await answers.get(
      () => Promise.resolve(['default']),
      () => expect.unreachable(),
    );
    const next = pending<string[]>();
    const got = answers.get(
      () => next.promise,
      () => expect.unreachable(),
    );
    await vi.advanceTimersByTimeAsync(150);
    next.resolve(['default', 'lab']);
    await expect(got).resolves.toEqual(['default', 'lab']);
  });

  it('past the deadline: the last answer; a late answer that differs is kept and starts another pass', async () => {
    const answers = new AnswerOrLast<string[]>(200);
    await answers.get(
      () => Promise.resolve(['default']),
      () => expect.unreachable(),
    );
    const late = pending<string[]>();
    const lateChange = vi.fn();
    const got = answers.get(() => late.promise, lateChange);
    await vi.advanceTimersByTimeAsync(200);
    await expect(got).resolves.toEqual(['default']);
    expect(lateChange).not.toHaveBeenCalled();
    late.resolve(['default', 'lab']);
    await vi.advanceTimersByTimeAsync(0);
    expect(lateChange).toHaveBeenCalledTimes(1);
    expect(answers.last).toEqual(['default', 'lab']);
  });

  it('a late answer equal to what the pass went on with starts nothing; a late failure is dropped', async () => {
    const answers = new AnswerOrLast<string[]>(200);
    await answers.get(
      () => Promise.resolve(['default']),
      () => expect.unreachable(),
    );
    const same = pending<string[]>();
    const failing = pending<string[]>();
    const lateChange = vi.fn();
    const first = answers.get(() => same.promise, lateChange);
    const second = answers.get(() => failing.promise, lateChange);
    await vi.advanceTimersByTimeAsync(200);
    await expect(first).resolves.toEqual(['default']);
    await expect(second).resolves.toEqual(['default']);
    same.resolve(['default']);
    failing.reject(new Error('libvirt went away'));
    await vi.advanceTimersByTimeAsync(0);
    expect(lateChange).not.toHaveBeenCalled();
    expect(answers.last).toEqual(['default']);
  });

  it('an answer older than one already stored is never kept', async () => {
    const answers = new AnswerOrLast<string[]>(200);
    await answers.get(
      () => Promise.resolve(['default']),
      () => expect.unreachable(),
    );
    const older = pending<string[]>();
    const lateChange = vi.fn();
    const got = answers.get(() => older.promise, lateChange);
    await vi.advanceTimersByTimeAsync(200);
    await got;
    await answers.get(
      () => Promise.resolve(['default', 'lab']),
      () => expect.unreachable(),
    );
    older.resolve(['gone']);
    await vi.advanceTimersByTimeAsync(0);
    expect(answers.last).toEqual(['default', 'lab']);
    expect(lateChange).not.toHaveBeenCalled();
  });

  it('a failure within the deadline fails the pass, as before', async () => {
    const answers = new AnswerOrLast<string[]>(200);
    await answers.get(
      () => Promise.resolve(['default']),
      () => expect.unreachable(),
    );
    await expect(
      answers.get(
        () => Promise.reject(new Error('no connection')),
        () => undefined,
      ),
    ).rejects.toThrow('no connection');
  });
});
