// A token bucket: `capacity` actions at once, one more every `refillMs`.
// Pure apart from the clock, which the caller passes in.
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly capacity: number,
    private readonly refillMs: number,
    now: number,
  ) {
    this.tokens = capacity;
    this.at = now;
  }

  /** Takes a token and returns 0, or returns how many ms until one is available. */
  take(now: number): number {
    this.tokens = Math.min(this.capacity, this.tokens + (now - this.at) / this.refillMs);
    this.at = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - this.tokens) * this.refillMs);
  }
}
