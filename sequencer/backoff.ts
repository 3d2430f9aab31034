/**
 * How long to wait before attempt `attempt` (0, 1, ...) at something that failed: 50 ms doubling each time, at most
 * `maxMs`. A dependency that returns is tried again within `maxMs`, and one that stays away costs a try per `maxMs`.
 */
export const backoffMs = (attempt: number, maxMs: number): number => Math.min(maxMs, 50 * 2 ** Math.min(attempt, 16));
