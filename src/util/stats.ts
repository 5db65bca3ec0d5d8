// Summaries the bench scripts and the chaos report print.

/** The value at fraction `p` (0..1) of the sorted samples. */
export function percentile (samples: readonly number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}

export function median (samples: readonly number[]): number {
  return percentile(samples, 0.5)
}
