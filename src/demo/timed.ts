/** Wall-clock seconds of an async step, for the demo's measurements. */
export async function timed<T>(step: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const start = process.hrtime.bigint();
  const value = await step();
  return { value, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
}
