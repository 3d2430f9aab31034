/** A bench setting from the environment (BENCH_...), or its default. */
export const env = (name: string, fallback: number): number => Number(process.env[name] ?? fallback);
